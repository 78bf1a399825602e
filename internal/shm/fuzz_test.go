package shm

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"testing"
	"time"
	"unsafe"
)

// alignedBytes returns an n-byte slice whose first byte is 8-byte aligned, as a mapping's is.
func alignedBytes(n int) []byte {
	if n <= 0 {
		return nil
	}
	words := make([]uint64, (n+7)/8)
	return unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), n)
}

// fuzzRegionBytes returns the bytes of a freshly created region with a small configuration.
func fuzzRegionBytes(f *testing.F) []byte {
	cfg := unitConfig()
	cfg.Classes = []Class{{Size: 64, Count: 2}, {Size: 128, Count: 1}}
	cfg.Topics, cfg.HistoryDepth, cfg.Held, cfg.InboxCapacity = 1, 0, 1, 2
	dir := f.TempDir()
	r, err := Create("fuzz", Options{Dir: dir, Config: cfg})
	if err != nil {
		f.Fatal(err)
	}
	r.Close()
	b, err := os.ReadFile(Path(dir, "fuzz"))
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// FuzzValidateHeader starts from a valid region and overwrites bytes at a fuzz-chosen offset,
// optionally recomputing the checksum (so that mutations of the config block and section
// table reach the checks behind it) and changing the length. validateHeader must not panic,
// and must either refuse the bytes or return a configuration that validates and a layout
// that is the configuration's and spans exactly the bytes.
func FuzzValidateHeader(f *testing.F) {
	base := fuzzRegionBytes(f)
	f.Add(uint16(0), []byte{}, false, int32(0))
	f.Add(uint16(0), []byte("OFFQREG2"), false, int32(0))
	f.Add(uint16(8), []byte{2, 0, 0, 0}, false, int32(0))
	f.Add(uint16(16), []byte{0, 0, 0, 0}, false, int32(0))
	f.Add(uint16(16), []byte{9, 0, 0, 0}, false, int32(0))
	f.Add(uint16(24), []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, false, int32(0))
	f.Add(uint16(64), []byte{9, 0, 0, 0}, true, int32(0))                            // too many classes
	f.Add(uint16(64), []byte{0, 0, 0, 0}, true, int32(0))                            // no classes
	f.Add(uint16(68), []byte{0, 0, 0, 0x40}, true, int32(0))                         // huge inbox count
	f.Add(uint16(72), []byte{3, 0, 0, 0}, true, int32(0))                            // capacity not a power of two
	f.Add(uint16(96), []byte{0, 0, 0, 0x40, 0xff, 0xff, 0xff, 0xff}, true, int32(0)) // giant class
	f.Add(uint16(160), []byte{0, 0, 0, 0, 0, 0, 0, 0x10}, true, int32(0))            // section offset
	f.Add(uint16(68), []byte{5, 0, 0, 0}, true, int32(0))                            // consistent but not these bytes
	f.Add(uint16(0), []byte{}, false, int32(-64))
	f.Add(uint16(0), []byte{}, false, int32(64))
	f.Add(uint16(0), []byte{}, false, int32(-len(base)+100))
	f.Fuzz(func(t *testing.T, off uint16, patch []byte, fixSum bool, resize int32) {
		n := len(base) + int(resize)
		if n < 0 || n > 2*len(base) {
			n = len(base)
		}
		mem := alignedBytes(n)
		copy(mem, base)
		if len(mem) > 0 {
			o := int(off) % len(mem)
			copy(mem[o:], patch)
		}
		if fixSum && len(mem) >= checksumTo {
			binary.NativeEndian.PutUint64(mem[32:], headerChecksum(mem))
		}
		cfg, lay, err := validateHeader(mem, time.Nanosecond)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) && !errors.Is(err, ErrNotReady) {
				t.Fatalf("validateHeader error %v is not ErrCorrupt, ErrVersion or ErrNotReady", err)
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("validateHeader accepted an invalid config %+v: %v", cfg, err)
		}
		if lay != computeLayout(cfg) {
			t.Fatalf("validateHeader returned a layout that is not its config's")
		}
		if lay.total != uint64(len(mem)) {
			t.Fatalf("validateHeader accepted %d bytes for a layout of %d", len(mem), lay.total)
		}
	})
}

// FuzzHandle feeds arbitrary 64-bit words to everything that decodes a handle. None may
// panic; only the handles of live buffers may succeed, and a failure changes nothing.
func FuzzHandle(f *testing.F) {
	cfg := poolConfig()
	r, err := Create("fuzz", Options{Dir: f.TempDir(), Config: cfg})
	if err != nil {
		f.Fatal(err)
	}
	defer r.Close()
	p, err := r.Attach("owner")
	if err != nil {
		f.Fatal(err)
	}
	defer p.Detach()
	q, err := r.Attach("other")
	if err != nil {
		f.Fatal(err)
	}
	defer q.Detach()

	// Live buffers in every class, one with extra references, and a released one.
	live := map[Handle]int{} // handle -> references
	for _, n := range []int{1, 64, 200, 1000} {
		b, err := p.alloc(n)
		if err != nil {
			f.Fatal(err)
		}
		live[b.Handle()] = 1
		f.Add(uint64(b.Handle()))
	}
	extra, _ := p.alloc(10)
	r.addRefsHandle(extra.Handle(), 2)
	live[extra.Handle()] = 3
	dead, _ := p.alloc(10)
	p.unloan(dead.Handle())
	for _, w := range []uint64{
		0, 1, ^uint64(0), 1 << 62, 1 << 63, uint64(dead.Handle()), uint64(extra.Handle()) + 8,
		uint64(extra.Handle()) + 1<<handleGenShift, uint64(extra.Handle()) + 1<<handleClassShift,
		uint64(makeHandle(0, r.pools[0].count, 1)), uint64(makeHandle(2, r.pools[2].count-1, 1)),
		uint64(makeHandle(7, 0, 1)), uint64(makeHandle(handleClassMask, handleIdxMask, genMask)),
	} {
		f.Add(w)
	}
	counts := func() [3]int { c := r.CountAllocated(); return [3]int{c[0], c[1], c[2]} }
	before := counts()

	f.Fuzz(func(t *testing.T, w uint64) {
		h := Handle(w)
		refs, isLive := live[h]
		_, _, _, derr := r.decode(h)
		b, err := r.buffer(h)
		switch {
		case isLive && err != nil:
			t.Fatalf("Buffer(%v) of a live buffer: %v", h, err)
		case !isLive && err == nil:
			t.Fatalf("Buffer(%#x) accepted a handle that names no live buffer", w)
		case err != nil && !errors.Is(err, ErrBadHandle):
			t.Fatalf("Buffer(%#x): %v, not ErrBadHandle", w, err)
		case isLive && (derr != nil || b.Refs() != refs || len(b.Data()) > b.Cap()):
			t.Fatalf("Buffer(%v): decode %v, refs %d (want %d)", h, derr, b.Refs(), refs)
		}
		if err := q.unloan(h); !errors.Is(err, ErrBadHandle) {
			t.Fatalf("Unloan(%#x) by a participant without loans: %v", w, err)
		}
		aerr := r.addRefsHandle(h, 1)
		if isLive != (aerr == nil) {
			t.Fatalf("AddRefs(%#x) = %v for a handle live=%v", w, aerr, isLive)
		}
		rerr := r.release(h)
		if isLive != (rerr == nil) {
			t.Fatalf("Release(%#x) = %v after AddRefs %v", w, rerr, aerr)
		}
		if !isLive && (!errors.Is(aerr, ErrBadHandle) || !errors.Is(rerr, ErrBadHandle)) {
			t.Fatalf("AddRefs/Release(%#x) = %v / %v, want ErrBadHandle", w, aerr, rerr)
		}
		// The same slot under its own generation: succeeds exactly for live slots.
		if derr == nil && !isLive {
			_, s, _, _ := r.decode(h)
			g := makeHandle(h.class(), h.index(), stateGen(s.state.Load()))
			if _, gLive := live[g]; gLive {
				if _, err := r.buffer(g); err != nil {
					t.Fatalf("Buffer(%v) with the slot's generation: %v", g, err)
				}
			} else if _, err := r.buffer(g); err == nil {
				t.Fatalf("Buffer(%v) of a free slot succeeded", g)
			}
		}
		if got := counts(); got != before {
			t.Fatalf("handle %#x changed the pools: %v -> %v", w, before, got)
		}
		for lh, n := range live {
			if b, _ := r.buffer(lh); b.Refs() != n {
				t.Fatalf("handle %#x changed the references of %v: %d, want %d", w, lh, b.Refs(), n)
			}
		}
	})
}

// cellWord turns a fuzz word into the word written into the cell for position pos of in. The
// fuzz word is relative, so that an input means the same in every run whatever the ring's
// absolute positions and generation are: for a marker (bit 63 set) the generation field is an
// offset from the inbox's generation and the position field an offset from pos; for a handle,
// bit 62 is flipped by pos's lap parity, so that 0 means "a handle of this lap".
func cellWord(in *Inbox, pos, w uint64) uint64 {
	if w&markBit != 0 {
		gen := (w>>48 + in.gen) & cellGenMask
		return w&(markBit|parityBit) | gen<<48 | (w+pos)&posMask
	}
	return w ^ in.parity(pos)
}

// FuzzCell writes an arbitrary word into one cell of a ring holding a few messages, then
// drives the ring. Consumers and producers must neither panic nor hang; a handle they get back
// is one that was pushed or the scribbled word itself; the ring recovers, so that a message
// pushed afterwards arrives; and every buffer not destroyed with the scribbled cell comes back.
func FuzzCell(f *testing.F) {
	cfg := inboxConfig()
	r, err := Create("fuzz", Options{Dir: f.TempDir(), Config: cfg})
	if err != nil {
		f.Fatal(err)
	}
	defer r.Close()
	p, err := r.Attach("fuzz")
	if err != nil {
		f.Fatal(err)
	}
	defer p.Detach()

	f.Add(uint64(0), uint8(0), uint8(0), uint8(0))                   // handle 0
	f.Add(uint64(0x40), uint8(1), uint8(3), uint8(1))                // a garbage handle of this lap
	f.Add(^uint64(0), uint8(2), uint8(1), uint8(1))                  // all ones
	f.Add(uint64(markBit|parityBit|7), uint8(1), uint8(0), uint8(2)) // reserved marker
	f.Add(uint64(markBit|5), uint8(3), uint8(2), uint8(0))           // marker for a later position
	f.Add(uint64(markBit|posMask), uint8(3), uint8(0), uint8(4))     // marker for the position before
	f.Add(uint64(markBit|8), uint8(4), uint8(1), uint8(7))           // marker for the next lap
	f.Add(uint64(markBit|1<<48|3), uint8(3), uint8(2), uint8(0))     // marker of another generation
	f.Add(uint64(1<<62|0x40), uint8(2), uint8(5), uint8(2))          // handle of the other lap
	f.Add(uint64(markBit), uint8(3), uint8(0), uint8(3))             // "empty" where a message is
	f.Fuzz(func(t *testing.T, w uint64, pushes, where, mode uint8) {
		policy := Overflow(mode % 3)
		capacity := uint64(2) << (mode / 3 % 3) // 2, 4 or 8
		in, err := p.OpenInbox(InboxConfig{Capacity: int(capacity), Overflow: policy, BlockLimit: time.Microsecond})
		if err != nil {
			t.Fatal(err)
		}
		bg := context.Background()
		pending := map[Handle]bool{} // pushed, not yet received
		n := uint64(pushes) % (capacity + 1)
		for i := range n {
			h, err := send(bg, r, p, &in, 0, i)
			if err != nil {
				t.Fatal(err)
			}
			pending[h] = true
		}
		off := uint64(where) % capacity
		pos := in.v.hdr.head.Load() + off
		word := cellWord(&in, pos, w)
		in.cell(pos).Store(word)

		var failure error
		// takeOne takes one message and releases it if it is one of ours; it reports what it
		// took.
		takeOne := func() (Handle, bool) {
			h, ok, err := in.tryPop()
			switch {
			case err != nil:
				failure = err
			case !ok:
			case pending[h]:
				delete(pending, h)
				if _, err := receive(r, h); err != nil {
					failure = err
				}
			case h != Handle(word&^parityBit):
				failure = errors.New("TryPop returned a handle nobody pushed")
			}
			return h, ok && failure == nil
		}
		consume := func() {
			for range 3 * capacity {
				if _, ok := takeOne(); !ok {
					return
				}
			}
		}
		within(t, r, 10*time.Second, "TryPop after the scribble", consume)
		if failure != nil {
			t.Fatalf("consumer: %v", failure)
		}
		within(t, r, 10*time.Second, "Push after the scribble", func() {
			for i := range capacity + 1 {
				if h, err := send(bg, r, p, &in, 0, 100+i); err == nil {
					pending[h] = true
				}
			}
		})
		within(t, r, 10*time.Second, "TryPop after the pushes", consume)
		if failure != nil {
			t.Fatalf("consumer: %v", failure)
		}
		// Recovery: a message pushed now arrives, after at most a few rounds of the consumer
		// repairing what it finds.
		arrived := false
		within(t, r, 10*time.Second, "recovery", func() {
			var probe Handle
			for range 4 * capacity {
				if probe == 0 {
					if h, err := send(bg, r, p, &in, 1, 999); err == nil {
						probe = h
						pending[h] = true
					}
				}
				h, ok := takeOne()
				if failure != nil {
					return
				}
				if ok && h == probe {
					arrived = true
					return
				}
			}
		})
		if failure != nil {
			t.Fatalf("consumer: %v", failure)
		}
		if !arrived {
			t.Fatalf("the ring did not recover: a message pushed after the scribble never arrived")
		}
		in.close()
		// What is still allocated was destroyed with the scribbled cell: at most one message.
		leaked := 0
		for h := range pending {
			if _, err := r.buffer(h); err == nil {
				leaked++
				r.release(h)
			}
		}
		if leaked > 1 {
			t.Fatalf("%d messages lost to one scribbled cell", leaked)
		}
		if n := allocated(r); n != 0 {
			t.Fatalf("%d buffers allocated after closing the inbox", n)
		}
	})
}
