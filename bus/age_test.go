package bus

import (
	"testing"
	"time"

	"github.com/offq/offq/internal/shm"
)

// TestSubscriptionAges: after a subscriber receives messages, its stats count each one's age
// (publish to Receive) once, in the histogram the inbox keeps in shared memory, and sum them
// (the test samples every take);
// messages still queued are not counted.
func TestSubscriptionAges(t *testing.T) {
	defer shm.SampleEveryAgeForTest()()
	b := openTest(t, t.TempDir())
	ctx := ctxT(t)
	sub, err := b.Subscribe("age.>", WithQueueDepth(16))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := b.Publisher("age.x")
	if err != nil {
		t.Fatal(err)
	}
	const sent, received = 10, 7
	for range sent {
		if err := pub.Publish(ctx, []byte("hello")); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(2 * time.Millisecond) // every age at least 2ms
	for range received {
		m, err := sub.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m.Release()
	}
	st, err := sub.Stats()
	if err != nil {
		t.Fatal(err)
	}
	var n, below uint64
	for i, c := range st.AgeBuckets {
		n += c
		if st.AgeBucketBound(i) < 2*time.Millisecond {
			below += c
		}
	}
	if n != received || st.Popped != received {
		t.Errorf("age counts %v sum to %d, popped %d, want %d", st.AgeBuckets, n, st.Popped, received)
	}
	if below != 0 {
		t.Errorf("%d messages counted younger than the 2ms they waited: %v", below, st.AgeBuckets)
	}
	if st.AgeSumNanos < received*uint64(2*time.Millisecond) || st.AgeSumNanos > received*uint64(time.Minute) {
		t.Errorf("age sum %v for %d messages that waited 2ms or more", time.Duration(st.AgeSumNanos), received)
	}
}

// ageCount sums a subscription's age histogram.
func ageCount(t *testing.T, s *Subscription) uint64 {
	t.Helper()
	var n uint64
	for _, c := range subStats(t, s).AgeBuckets {
		n += c
	}
	return n
}

// TestRingTakesCountAges: messages a subscriber takes from its topic's slot ring, with Receive
// or ReceiveBatch, count in its age histogram (offq_message_age_seconds) as those taken from
// its queue do: every one when the test samples every take, and with the default sampling the
// one in AgeSample whose topic sequence number is a multiple of it.
func TestRingTakesCountAges(t *testing.T) {
	ctx := ctxT(t)
	t.Run("every take", func(t *testing.T) {
		defer shm.SampleEveryAgeForTest()()
		b := openRingBus(t, 4)
		sub := mustSubscribe(t, b, "agering.x", WithQueueDepth(4))
		pub := ringPublisher(t, b, "agering.x", 16, 32)
		const n = 8
		for i := range n {
			if err := pub.Publish(ctx, []byte{byte(i)}); err != nil {
				t.Fatal(err)
			}
		}
		receiveN(t, ctx, sub, n/2)
		got := 0
		for got < n/2 {
			ms, err := sub.ReceiveBatch(ctx, make([]Message, n/2-got))
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range ms {
				m.Release()
			}
			got += len(ms)
		}
		if st := subStats(t, sub); !st.Ring {
			t.Fatalf("the subscription does not read the ring: %+v", st)
		}
		if c := ageCount(t, sub); c != n {
			t.Errorf("%d messages received from the ring, %d counted in the age histogram (every take sampled)", n, c)
		}
	})
	t.Run("sampled", func(t *testing.T) {
		b := openRingBus(t, 4)
		sub := mustSubscribe(t, b, "agering.y", WithQueueDepth(4))
		pub := ringPublisher(t, b, "agering.y", 16, 32)
		const n = 4 * shm.AgeSample
		for i := range n {
			if err := pub.Publish(ctx, []byte{byte(i)}); err != nil {
				t.Fatal(err)
			}
			receiveN(t, ctx, sub, 1)
		}
		if c := ageCount(t, sub); c != n/shm.AgeSample {
			t.Errorf("%d messages received from the ring (topic sequences 1 to %d), %d counted in the age histogram; want %d",
				n, n, c, n/shm.AgeSample)
		}
	})
}
