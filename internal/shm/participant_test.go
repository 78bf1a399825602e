package shm

import (
	"context"
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// gcUntilFinalizersRan runs the garbage collector until the finalizers queued by it have run:
// a sentinel allocated after the objects of interest is finalized last in the queue's order
// of discovery, so it is waited for twice (bounded).
func gcUntilFinalizersRan(t *testing.T) {
	t.Helper()
	for range 2 {
		done := make(chan struct{})
		s := new([64]byte)
		runtime.SetFinalizer(s, func(*[64]byte) { close(done) })
		s = nil
		runtime.GC()
		runtime.GC()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("finalizers did not run")
		}
	}
}

// TestAttachmentSurvivesGC: a participant that becomes garbage without Detach is still
// attached, alive to every other process (its kernel lock is held) and not reaped: the
// lock lives as long as the attachment, not as long as a Go value.
func TestAttachmentSurvivesGC(t *testing.T) {
	r, err := Create("gc", Options{Dir: t.TempDir(), Config: inboxConfig()})
	if err != nil {
		t.Fatal(err)
	}
	idx := func() int {
		p, err := r.Attach("dropped")
		if err != nil {
			t.Fatal(err)
		}
		return p.Index() // p becomes garbage here, attached
	}()
	gcUntilFinalizersRan(t)
	if alive, err := r.Alive(idx); err != nil || !alive {
		t.Fatalf("participant %d alive = %v, %v after GC: its lock was dropped while attached", idx, alive, err)
	}
	rep, err := r.Reap()
	if err != nil {
		t.Fatal(err)
	}
	if rep.Participants != 0 {
		t.Fatalf("reap of a live process's participant: %+v", rep)
	}
}

// TestDetachClosesInboxes: Detach closes the inboxes the participant left open, releasing
// what was queued, so that a producer blocked on one (Block policy without a limit) gets
// ErrClosed instead of waiting for ever.
func TestDetachClosesInboxes(t *testing.T) {
	r, err := Create("detach", Options{Dir: t.TempDir(), Config: inboxConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	pub := attachUnit(t, r, "pub")
	sub, err := r.Attach("sub")
	if err != nil {
		t.Fatal(err)
	}
	in, err := sub.OpenInbox(InboxConfig{Capacity: 4, Overflow: Block, Pattern: "x"})
	if err != nil {
		t.Fatal(err)
	}
	bg := context.Background()
	for i := range 4 {
		if _, err := send(bg, r, pub, &in, 0, uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := sub.Detach(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(bg, 2*time.Second)
	defer cancel()
	if _, err := send(ctx, r, pub, &in, 0, 4); !errors.Is(err, ErrClosed) {
		t.Fatalf("push to a detached participant's inbox: %v, want ErrClosed", err)
	}
	if n := allocated(r); n != 0 {
		t.Fatalf("%d buffers allocated after Detach: its queued messages were not released", n)
	}
	if s := r.InboxStats(); len(s) != 0 {
		t.Fatalf("inboxes open after Detach: %+v", s)
	}
}

// TestZeroFilledRegionIsCorrupt: a region overwritten with zeros while attached is reported
// as damaged (ErrCorrupt, saying so) by Check, Alloc and Reap, instead of looking like an
// empty region whose pools are free.
func TestZeroFilledRegionIsCorrupt(t *testing.T) {
	r, err := Create("zeroed", Options{Dir: t.TempDir(), Config: inboxConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := attachUnit(t, r, "p")
	if err := r.Check(); err != nil {
		t.Fatalf("Check of an intact region: %v", err)
	}
	f, err := os.OpenFile(r.Path(), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, r.Size()), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	err = r.Check()
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("Check of a zero-filled region: %v", err)
	}
	t.Log(err)
	if _, err := p.alloc(8); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Alloc in a zero-filled region: %v, want ErrCorrupt", err)
	}
	if _, err := r.Reap(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Reap of a zero-filled region: %v, want ErrCorrupt", err)
	}
}
