package bus

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/offq/offq/internal/shm"
)

// TestLoanEnded: sending or discarding a loan a second time is the caller's bug, reported as
// ErrLoanEnded (not ErrCorrupt), and delivers nothing: the subscriber gets the message once
// and the pool comes back to empty.
func TestLoanEnded(t *testing.T) {
	b, err := Open("ended", WithDir(t.TempDir()), WithReapInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	sub, _ := b.Subscribe("t")
	pub, _ := b.Publisher("t")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	l, err := pub.Loan(4)
	if err != nil {
		t.Fatal(err)
	}
	copy(l.Bytes(), "once")
	if err := pub.Send(ctx, l); err != nil {
		t.Fatal(err)
	}
	for what, err := range map[string]error{"Send again": pub.Send(ctx, l), "Discard after Send": l.Discard()} {
		if !errors.Is(err, ErrLoanEnded) || errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrLoanEnded and not ErrCorrupt", what, err)
		}
	}
	d, _ := pub.Loan(4)
	if err := d.Discard(); err != nil {
		t.Fatal(err)
	}
	if err := d.Discard(); !errors.Is(err, ErrLoanEnded) {
		t.Errorf("Discard twice: %v, want ErrLoanEnded", err)
	}
	if err := pub.Send(ctx, Loan{}); !errors.Is(err, ErrLoanEnded) {
		t.Errorf("Send of the zero Loan: %v, want ErrLoanEnded", err)
	}

	m, err := sub.Receive(ctx)
	if err != nil || string(m.Data()) != "once" {
		t.Fatalf("Receive: %q, %v", m.Data(), err)
	}
	m.Release()
	if n := sub.Len(); n != 0 {
		t.Errorf("%d more messages queued after a second Send of one loan, want 0", n)
	}
	if n, err := b.r.Allocated(); err != nil || n[0] != 0 {
		t.Errorf("buffers in use %v (%v), want none", n, err)
	}
}

// TestErrorTexts: each layer says its operation and name once.
func TestErrorTexts(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "junk"), make([]byte, 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open("junk", WithDir(dir))
	if want := `bus: open "junk": region corrupt: not an offq region (magic 0x0)`; err == nil || err.Error() != want {
		t.Errorf("Open of a file of zeros: %v\nwant %s", err, want)
	}
	b, err := Open("cfg", WithDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c := b.Config()
	c.Inboxes *= 2
	_, err = Open("cfg", WithDir(dir), WithConfig(c))
	want := `bus: open "cfg": incompatible configuration: inboxes: region has 64, asked for 128`
	if !errors.Is(err, ErrIncompatibleConfig) || err.Error() != want {
		t.Errorf("Open with another configuration: %v\nwant %s", err, want)
	}
	for _, e := range []error{err} {
		if strings.Count(e.Error(), "offq:") > 0 || strings.Count(e.Error(), "bus:") != 1 {
			t.Errorf("%q: a prefix repeated", e)
		}
	}
}

// TestQueueStateScribbled: another process overwrites a subscription's queue state word. The
// subscriber does not report an orderly close (ErrClosed) that nobody made: it fails with an
// error wrapping ErrCorrupt that says what happened (issue 14, item 9).
func TestQueueStateScribbled(t *testing.T) {
	b, err := Open("scribbled", WithDir(t.TempDir()), WithReapInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	sub, _ := b.Subscribe("t")
	shm.ScribbleStateForTest(&sub.in, 0xdeadbeef)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = sub.Receive(ctx)
	if !errors.Is(err, ErrCorrupt) || errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("Receive from a queue whose state word was overwritten: %v, want ErrCorrupt saying so", err)
	}
}
