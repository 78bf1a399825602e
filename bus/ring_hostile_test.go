package bus

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"
)

// forgeRingHeader maps the region file of b writable, as another process with write access
// would, finds the slot ring's header (magic "OFQR" 32 bytes past a cache line) and calls
// forge with the header's bytes.
func forgeRingHeader(t *testing.T, b *Bus, forge func(hd []byte)) {
	t.Helper()
	f, err := os.OpenFile(b.Path(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := syscall.Mmap(int(f.Fd()), 0, int(st.Size()), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(m)
	var magic [4]byte // "OFQR", in the machine's byte order
	binary.NativeEndian.PutUint32(magic[:], 0x5251464f)
	for i := 0; ; {
		j := bytes.Index(m[i:], magic[:])
		if j < 0 {
			t.Fatal("no slot ring header in the region")
		}
		if k := i + j; k%64 == 32 {
			forge(m[k : k+96])
			return
		}
		i += j + 1
	}
}

// One 4-byte word of a live ring's header (its slot count) written over by another process.
// The writer goes on with its own view of the ring and skips the queue of every subscriber
// that reads the ring; a new such subscriber refused the corrupt header and so read neither
// the ring nor its queue: it received nothing for the rest of the ring's life, and nothing
// counted the damage. Now the writer puts its header back within a second (RepairWord),
// counted, and a subscriber that refused the ring tries it again.
func TestRingForgedHeaderHeals(t *testing.T) {
	b := openRingBus(t, 4)
	ctx := ctxT(t)
	pub := ringPublisher(t, b, "forged.x", 16, 32)
	if err := pub.Publish(ctx, []byte("before")); err != nil {
		t.Fatal(err)
	}
	forgeRingHeader(t, b, func(hd []byte) {
		binary.NativeEndian.PutUint32(hd[4:], 1<<16) // slots: a ring larger than its buffer
	})

	sub := mustSubscribe(t, b, "forged.x", WithQueueDepth(4))
	defer sub.Close()
	for i := range 5 {
		if err := pub.Publish(ctx, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second) // the writer's Bus repairs once a second
	defer cancel()
	m, err := sub.Receive(rctx)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a subscriber of the topic received none of 5 messages published after it subscribed (corrupt words counted: %d)", b.r.Corrupt())
	}
	if err != nil {
		t.Fatal(err)
	}
	if d := m.Data(); !bytes.Equal(d, []byte{0}) {
		t.Errorf("the subscriber's first message %q, want the first published after it subscribed", d)
	}
	m.Release()
	if b.r.Corrupt() == 0 {
		t.Error("the header written over was not counted")
	}
}
