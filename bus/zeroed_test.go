package bus

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/offq/offq/internal/shm"
)

// TestZeroFilledRegion: the region file is overwritten with zeros while a publisher and a
// subscriber use it. Neither may carry on as if nothing happened (publishing to nobody) or
// report an orderly close (ErrClosed): both fail with an error wrapping ErrCorrupt.
func TestZeroFilledRegion(t *testing.T) {
	dir := t.TempDir()
	b, err := Open("zeroed", WithDir(dir), WithReapInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	sub, err := b.Subscribe("z")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := b.Publisher("z")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := pub.Publish(ctx, []byte("before")); err != nil {
		t.Fatal(err)
	}
	m, err := sub.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m.Release()

	f, err := os.OpenFile(shm.Path(dir, "zeroed"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, b.r.Size()), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()

	if err := pub.Publish(ctx, []byte("after")); !errors.Is(err, ErrCorrupt) {
		t.Errorf("publish into a zero-filled region: %v, want ErrCorrupt", err)
	}
	if _, err := sub.Receive(ctx); !errors.Is(err, ErrCorrupt) {
		t.Errorf("receive from a zero-filled region: %v, want ErrCorrupt", err)
	}
}
