package bus

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/offq/offq/internal/faultfs"
	"github.com/offq/offq/internal/peer"
	"github.com/offq/offq/internal/shm"
)

// Faults at the door: a process whose region file is cut short (or whose pages cannot be
// backed) gets an error wrapping ErrCorrupt from every bus call, instead of dying of SIGBUS.
// A fault kills the process that takes it, so each attack runs in a child process, which
// must report the error and exit on its own.

// envFaultDir passes a child the directory holding its region.
const envFaultDir = "OFFQ_FAULT_DIR"

// cutConfig is a small region whose last pool, at the end of the file, is one 1 MiB buffer.
func cutConfig() shm.Config {
	c := shm.DefaultConfig()
	c.Classes = []shm.Class{{Size: 256, Count: 64}, {Size: 1 << 20, Count: 1}}
	c.Inboxes, c.InboxCapacity, c.Topics, c.Participants, c.HistoryDepth, c.Held = 8, 64, 16, 8, 4, 64
	return c
}

// expectFault reads the child's report, a line starting with prefix, and checks that it is
// a fault turned into an error, and that the child then exited with status 0.
func expectFault(t *testing.T, p *peer.Proc, prefix string) {
	t.Helper()
	line, err := p.Expect(prefix, 30*time.Second)
	if err != nil {
		t.Fatalf("%v: touching a cut region must fail with an error, not kill the process", err)
	}
	if !strings.Contains(line, "region corrupt") || !strings.Contains(line, "memory fault") {
		t.Fatalf("%v reported %q, want an error wrapping ErrCorrupt about a memory fault", p, line)
	}
	if err := p.Wait(30 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestFaultPublishCutBuffer: the region file is cut in the middle of the 1 MiB buffer that
// Publish copies the payload into. The copy faults; Publish returns the error.
func TestFaultPublishCutBuffer(t *testing.T) {
	p := peer.Start(t, "fault-publish", envFaultDir+"="+t.TempDir())
	expectFault(t, p, "publish:")
}

func roleFaultPublish(c *peer.Child) error {
	dir := os.Getenv(envFaultDir)
	b, err := Open("cut", WithDir(dir), WithConfig(cutConfig()), WithReapInterval(0))
	if err != nil {
		return err
	}
	defer b.Close()
	pub, err := b.Publisher("t")
	if err != nil {
		return err
	}
	// The 1 MiB buffer ends the file: cutting 512 KiB leaves its header and first half.
	if err := os.Truncate(shm.Path(dir, "cut"), int64(b.r.Size()-512<<10)); err != nil {
		return err
	}
	c.Send("publish: %v", pub.Publish(c.Context(), make([]byte, 1<<20)))
	return nil
}

// TestFaultPublisherLookup: the file is cut to its first page; looking up a topic for a new
// Publisher reads the topic table, past the cut.
func TestFaultPublisherLookup(t *testing.T) {
	p := peer.Start(t, "fault-lookup", envFaultDir+"="+t.TempDir())
	expectFault(t, p, "publisher:")
}

func roleFaultLookup(c *peer.Child) error {
	dir := os.Getenv(envFaultDir)
	b, err := Open("cut", WithDir(dir), WithConfig(cutConfig()), WithReapInterval(0))
	if err != nil {
		return err
	}
	defer b.Close()
	if err := os.Truncate(shm.Path(dir, "cut"), 4096); err != nil {
		return err
	}
	_, err = b.Publisher("a")
	c.Send("publisher: %v", err)
	return nil
}

// TestFaultOpenUnbacked: a valid region copied sparse onto a full tmpfs: its header validates,
// but every page of its tables is a hole that no memory can back. bus.Open touches no page of
// the pools (its cost must not grow with the region), so it may succeed; then the first
// publish, which claims a buffer, faults. Either way the fault is an error, not a crash.
func TestFaultOpenUnbacked(t *testing.T) {
	src := t.TempDir()
	b, err := Open("sparse", WithDir(src), WithConfig(cutConfig()), WithReapInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	dir := faultfs.Tmpfs(t, 256<<10)
	faultfs.CopyRegion(t, shm.Path(src, "sparse"), shm.Path(dir, "sparse"), faultfs.Zero)
	faultfs.Fill(t, dir)
	p := peer.Start(t, "fault-open", envFaultDir+"="+dir)
	expectFault(t, p, "open:")
}

func roleFaultOpen(c *peer.Child) error {
	b, err := Open("sparse", WithDir(os.Getenv(envFaultDir)), WithConfig(cutConfig()), WithReapInterval(0))
	if err == nil {
		p, perr := b.Publisher("t")
		if perr == nil {
			perr = p.Publish(context.Background(), []byte("x"))
		}
		err = perr
		b.Close()
	}
	c.Send("open: %v", err)
	return nil
}
