package shm

import (
	"encoding/binary"
	"errors"
	"testing"
	"unsafe"
)

type viewPoint struct {
	X, Y int64
	Tag  uint16
	Ok   bool
}

func TestViewAliasesBuffer(t *testing.T) {
	r := newUnitRegion(t, inboxConfig())
	p := attachUnit(t, r, "p")
	for _, cl := range r.Config().Classes {
		b, err := p.alloc(int(cl.Size))
		if err != nil {
			t.Fatal(err)
		}
		if a := uintptr(unsafe.Pointer(&b.Bytes()[0])) % 64; a != 32 {
			t.Fatalf("class %s: payload %d bytes past a 64-byte boundary; want 32 (the header's half of the line)", cl.Size, a)
		}
		v, err := View[viewPoint](b.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		*v = viewPoint{X: -1, Y: 1 << 40, Tag: 7, Ok: true}
		raw := b.Bytes()
		if x, y := int64(binary.NativeEndian.Uint64(raw)), binary.NativeEndian.Uint64(raw[8:]); x != -1 || y != 1<<40 {
			t.Fatalf("class %s: bytes say %d %d", cl.Size, x, y)
		}
		binary.NativeEndian.PutUint16(raw[16:], 9)
		if v.Tag != 9 {
			t.Fatalf("class %s: write to the bytes not seen through the view", cl.Size)
		}
		if err := p.unloan(b.Handle()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestViewChecksLengthAndAlignment(t *testing.T) {
	buf := alignedBytes(64)
	if _, err := View[viewPoint](buf[:unsafe.Sizeof(viewPoint{})-1]); !errors.Is(err, ErrBadView) {
		t.Errorf("short buffer: %v, want ErrBadView", err)
	}
	if _, err := View[viewPoint](buf[:unsafe.Sizeof(viewPoint{})]); err != nil {
		t.Errorf("exact length: %v", err)
	}
	if _, err := View[viewPoint](buf[1:]); !errors.Is(err, ErrBadView) {
		t.Errorf("misaligned buffer: %v, want ErrBadView", err)
	}
	if _, err := View[[3]byte](buf[1:]); err != nil {
		t.Errorf("byte array at an odd address: %v", err)
	}
	if _, err := View[struct{}](nil); !errors.Is(err, ErrBadView) {
		t.Errorf("empty type over nil: %v, want ErrBadView", err)
	}
	if _, err := View[struct{}](buf[:1]); err != nil {
		t.Errorf("empty type over one byte: %v", err)
	}
	if _, err := View[uint64](nil); !errors.Is(err, ErrBadView) {
		t.Errorf("nil buffer: %v, want ErrBadView", err)
	}
}

func TestNoAllocsView(t *testing.T) {
	buf := alignedBytes(64)
	var sink *viewPoint
	checkNoAllocs(t, "View", func() {
		v, err := View[viewPoint](buf)
		if err != nil {
			panic(err)
		}
		sink = v
	})
	_ = sink
}
