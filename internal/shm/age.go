package shm

import (
	"math"
	"math/bits"
	"time"
)

// The message age histogram: each inbox counts the messages its consumer takes by their age
// at the take (the time of the take minus the publish stamp), in ageBuckets log2 buckets, and
// sums the ages. It lives in the inbox header, on lines of its own, so that any process that
// reads the region (the directory exporter) serves it; only the consumer writes it.

// ageBuckets is the number of histogram buckets: 24 bounded ones, 1 µs doubling to 2^23 µs
// (about 8.4 s), and one for everything older.
const ageBuckets = 25

// ageBucket returns the bucket of an age in nanoseconds: the smallest i with
// age <= 1 µs << i, or ageBuckets-1. A negative age (a stamp from the future: a clock read
// on another CPU a moment later, or a scribble) counts as 0.
func ageBucket(age int64) int {
	if age <= 1000 {
		return 0
	}
	return min(bits.Len64(uint64(age-1)/1000), ageBuckets-1)
}

// noteAge counts a message published at stamp and taken now in in's histogram: two atomic
// adds on the inbox's histogram lines, which only its consumer writes.
func (in *Inbox) noteAge(stamp int64) {
	age := max(Now()-stamp, 0)
	h := in.v.hdr
	h.ageCounts[ageBucket(age)].Add(1)
	h.ageSum.Add(uint64(age))
}

// AgeBucketBound returns the upper bound of bucket i of AgeBuckets: 1 µs << i, and
// math.MaxInt64 (no bound) for the last.
func (InboxStats) AgeBucketBound(i int) time.Duration {
	if i >= ageBuckets-1 {
		return math.MaxInt64
	}
	return time.Microsecond << i
}
