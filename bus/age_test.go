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
