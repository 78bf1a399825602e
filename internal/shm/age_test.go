package shm

import (
	"context"
	"math"
	"testing"
	"time"
)

func TestAgeBucket(t *testing.T) {
	for _, c := range []struct {
		age  int64
		want int
	}{
		{-5, 0}, {0, 0}, {1, 0}, {1000, 0}, {1001, 1}, {2000, 1}, {2001, 2}, {4000, 2},
		{int64(3 * time.Millisecond), 12}, {int64(time.Microsecond << 23), 23},
		{int64(time.Microsecond<<23) + 1, 24}, {math.MaxInt64, 24},
	} {
		if got := ageBucket(c.age); got != c.want {
			t.Errorf("ageBucket(%d) = %d, want %d", c.age, got, c.want)
		}
		// The bucket's bound holds the age, and the previous bound does not.
		b := (InboxStats{}).AgeBucketBound(c.want)
		if c.age > int64(b) || c.want > 0 && c.age <= int64((InboxStats{}).AgeBucketBound(c.want-1)) {
			t.Errorf("age %d in bucket %d, bound %v", c.age, c.want, b)
		}
	}
	if b := (InboxStats{}).AgeBucketBound(ageBuckets - 1); b != math.MaxInt64 {
		t.Errorf("last bound %v", b)
	}
}

// TestTakeNotesAge: Take counts each message's age in the inbox's histogram (a
// stamp from the future as age 0), and reopening the entry starts it again.
func TestTakeNotesAge(t *testing.T) {
	defer SampleEveryAgeForTest()()
	r, err := Create("age", Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := must(r.Attach("p"))
	defer p.Detach()
	tp := must(p.LookupTopic("age.a", true, 0))
	in := must(p.OpenInbox(InboxConfig{Capacity: 4, Pattern: "age.a"}))
	ctx := context.Background()
	now := Now()
	for _, st := range []int64{now + int64(time.Hour), now - int64(600*time.Millisecond), now - int64(100*time.Second)} {
		if _, err := tp.Send(ctx, must(p.Loan(8)).WithStamp(st), 8, []Inbox{in}); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		h := must(p.Take(ctx, &in, Waiter{}))
		h.Release()
	}
	s, _ := statsOf(r, in.ID())
	want := make([]uint64, ageBuckets)
	// 600 ms is in bucket 20, (524 ms, 1049 ms]: the take may come up to 449 ms late on a
	// loaded machine and still land there.
	want[0], want[20], want[24] = 1, 1, 1
	for i := range want {
		if s.AgeBuckets[i] != want[i] {
			t.Errorf("age buckets %v, want %v", s.AgeBuckets, want)
			break
		}
	}
	if least := uint64(100*time.Second + 600*time.Millisecond); s.AgeSumNanos < least || s.AgeSumNanos > least+uint64(time.Minute) {
		t.Errorf("age sum %v, want a little over %v", time.Duration(s.AgeSumNanos), time.Duration(least))
	}
	if err := p.CloseInbox(&in); err != nil {
		t.Fatal(err)
	}
	in = must(p.OpenInbox(InboxConfig{Capacity: 4, Pattern: "age.a"}))
	s, _ = statsOf(r, in.ID())
	for _, n := range s.AgeBuckets {
		if n != 0 || s.AgeSumNanos != 0 {
			t.Fatalf("reopened inbox's histogram %v, sum %d", s.AgeBuckets, s.AgeSumNanos)
		}
	}
}

// BenchmarkNoteAge is what the age histogram adds to a take: a clock read and two atomic
// adds on the inbox's histogram lines.
func BenchmarkNoteAge(b *testing.B) {
	r, err := Create("agebench", Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	p := must(r.Attach("p"))
	defer p.Detach()
	in := must(p.OpenInbox(InboxConfig{Capacity: 4, Pattern: "age.a"}))
	st := Now()
	for b.Loop() {
		in.noteAge(makeHandle(0, 0, 0), st) // generation 0: sampled
	}
}

// BenchmarkNoteAgeSampled is what the age histogram adds to the average take: the sampling
// test, and one in AgeSample times a clock read and two atomic adds.
func BenchmarkNoteAgeSampled(b *testing.B) {
	r, err := Create("agebench", Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	p := must(r.Attach("p"))
	defer p.Detach()
	in := must(p.OpenInbox(InboxConfig{Capacity: 4, Pattern: "age.a"}))
	st := Now()
	var g uint64
	for b.Loop() {
		g++
		in.noteAge(makeHandle(0, 0, g), st)
	}
}

// TestAgeSampled: with the default sampling, a take counts a message's age exactly when its
// buffer's generation is a multiple of AgeSample.
func TestAgeSampled(t *testing.T) {
	r, err := Create("agesample", Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := must(r.Attach("p"))
	defer p.Detach()
	in := must(p.OpenInbox(InboxConfig{Capacity: 4, Pattern: "age.a"}))
	var want uint64
	for g := uint64(1); g <= 5*AgeSample+3; g++ {
		in.noteAge(makeHandle(0, 0, g), Now())
		if g%AgeSample == 0 {
			want++
		}
	}
	s, _ := statsOf(r, in.ID())
	var n uint64
	for _, c := range s.AgeBuckets {
		n += c
	}
	if n != want || want != 5 {
		t.Errorf("%d ages counted, want %d", n, want)
	}
}
