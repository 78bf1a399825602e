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

// AgeSample is the histogram's sampling rate: a take counts the message's age if the
// generation of the message's buffer is a multiple of AgeSample. A clock read and two atomic
// adds cost about 48 ns, 14% of an in-process publish and receive; one take in AgeSample pays
// it. Buffer generations count a slot's allocations one by one, so the choice is spread over
// every slot and does not depend on the message's age, and every subscriber of a fanned-out
// message samples the same ones. A message taken from a slot ring has no buffer of its own: it
// is counted if its topic sequence number is a multiple of AgeSample (noteRingAge).
const AgeSample = 16

// ageMask is AgeSample-1 (AgeSample is a power of two), or 0 for tests that count every
// take (SetAgeSampleForTest).
var ageMask uint64 = AgeSample - 1

var _ [0]struct{} = [AgeSample & (AgeSample - 1)]struct{}{} // AgeSample is a power of two

// noteAge counts the age of a message in buffer h, published at stamp and taken now, in in's
// histogram if h is sampled (see AgeSample): two atomic adds on the inbox's histogram lines,
// which only its consumer writes.
func (in *Inbox) noteAge(h Handle, stamp int64) {
	if h.gen()&ageMask != 0 {
		return
	}
	in.countAge(stamp)
}

// noteRingAge is noteAge for a message taken from a slot ring (a copy, no buffer of its own):
// it is sampled by its topic sequence number instead, which is as spread and as independent of
// its age, and the same for every reader of the ring. An unsampled take pays a mask and a
// branch (inlined), no locked instruction.
func (in *Inbox) noteRingAge(topicSeq uint64, stamp int64) {
	if topicSeq&ageMask == 0 {
		in.countAge(stamp)
	}
}

// countAge counts the age of a message published at stamp and taken now in in's histogram.
func (in *Inbox) countAge(stamp int64) {
	age := max(Now()-stamp, 0)
	hd := in.v.hdr
	hd.ageCounts[ageBucket(age)].Add(1)
	hd.ageSum.Add(uint64(age))
}

// AgeBucketBound returns the upper bound of bucket i of AgeBuckets: 1 µs << i, and
// math.MaxInt64 (no bound) for the last.
func (InboxStats) AgeBucketBound(i int) time.Duration {
	if i >= ageBuckets-1 {
		return math.MaxInt64
	}
	return time.Microsecond << i
}
