package bus

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestReleaseAfterGenerationWrap: a message is received and released, then 2^22 more
// messages pass through the same buffer (a process reuses the buffer it freed last) and the
// same held entry; the next one is received and kept. Releasing the first Message value again
// must return ErrReleased and leave the kept message intact. With the 22-bit generation of
// layout version 1 the old value's handle was by then bit-for-bit the kept one's: the second
// Release returned nil, freed the kept message's buffer, and the next publish overwrote it.
func TestReleaseAfterGenerationWrap(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("4 M messages (internal/shm's TestHandleGenerationWrap runs the same under -race)")
	}
	b, err := Open("wrap", WithDir(t.TempDir()), WithReapInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	sub, err := b.Subscribe("w")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	pub, err := b.Publisher("w")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	roundTrip := func(payload []byte) Message {
		if err := pub.Publish(ctx, payload); err != nil {
			t.Fatal(err)
		}
		m, err := sub.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	old := roundTrip([]byte("old"))
	if err := old.Release(); err != nil {
		t.Fatal(err)
	}
	for range 1<<22 - 1 {
		if err := roundTrip([]byte("x")).Release(); err != nil {
			t.Fatal(err)
		}
	}
	live := roundTrip([]byte("live"))
	defer live.Release()
	if err := old.Release(); !errors.Is(err, ErrReleased) {
		t.Errorf("second Release of a message 2^22 messages later: %v, want ErrReleased", err)
	}
	if err := roundTrip([]byte("next")).Release(); err != nil {
		t.Fatal(err)
	}
	if got := string(live.Data()); got != "live" {
		t.Fatalf("the kept message reads %q after a stale Release and one more publish, want %q", got, "live")
	}
}
