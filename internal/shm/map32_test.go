package shm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestRegionTooLargeFor32Bit: a 32-bit process refuses a region it cannot map, and says why.
// Create of a configuration over 2 GiB fails with ErrInvalidConfig and leaves no file (for 5 GiB
// it used to write a 5 GiB file, map its first 1 GiB and report a bus of 1 GiB; for 3 GiB, fail
// with mmap's "invalid argument"). Open of such a file fails with ErrIncompatibleConfig, not
// ErrCorrupt (it used to call a sound region corrupt, which an operator may remove). It runs on
// 32-bit platforms; CI runs it for arm under qemu.
func TestRegionTooLargeFor32Bit(t *testing.T) {
	if strconv.IntSize != 32 {
		t.Skip("a 64-bit process maps every region the limits allow")
	}
	for _, gib := range []uint32{3, 5} { // 3 GiB overflows an int; 5 GiB wraps around to 1 GiB
		dir := t.TempDir()
		cfg := DefaultConfig()
		cfg.Classes = []Class{{Size: 1 << 30, Count: gib}}
		r, err := Create("big", Options{Dir: dir, Config: cfg})
		if err == nil {
			r.Close()
			t.Fatalf("%d GiB: Create succeeded in a 32-bit process", gib)
		}
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "a 32-bit process maps 2147483647 at most") {
			t.Fatalf("%d GiB: Create: %v, want ErrInvalidConfig saying what a 32-bit process maps", gib, err)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Fatalf("%d GiB: Create left %d files", gib, len(ents))
		}

		// A region of that size made by a 64-bit process (a sparse file: only the size counts).
		f, err := os.OpenFile(filepath.Join(dir, "big"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(int64(gib) << 30); err != nil {
			t.Fatal(err)
		}
		f.Close()
		for _, ro := range []bool{false, true} {
			r, err = Open("big", Options{Dir: dir, ReadOnly: ro})
			if err == nil {
				r.Close()
				t.Fatalf("%d GiB: Open (read-only %v) succeeded in a 32-bit process", gib, ro)
			}
			if !errors.Is(err, ErrIncompatibleConfig) || errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "use the bus from 64-bit processes") {
				t.Fatalf("%d GiB: Open (read-only %v): %v, want ErrIncompatibleConfig, not ErrCorrupt", gib, ro, err)
			}
		}
	}
}

// TestSlotRingTooLargeFor32Bit: the largest slot ring (65,536 slots of 64 KiB) takes 4 GiB,
// whose byte count a 32-bit int wraps around to 4 MiB: a 32-bit process was lent a 4 MiB
// buffer for it, then called the ring's own buffer corrupt. It now refuses the shape with
// ErrTooLarge. It runs on 32-bit platforms; CI runs it for arm under qemu.
func TestSlotRingTooLargeFor32Bit(t *testing.T) {
	if strconv.IntSize != 32 {
		t.Skip("a 64-bit process maps every ring the limits allow")
	}
	cfg := DefaultConfig()
	cfg.Classes = []Class{{Size: 256, Count: 64}, {Size: 8 << 20, Count: 1}}
	r, err := Create("ring32", Options{Dir: t.TempDir(), Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	me, err := r.Attach("test")
	if err != nil {
		t.Fatal(err)
	}
	defer me.Detach()
	tp, err := me.LookupTopic("ring.big", true, 0)
	if err != nil {
		t.Fatal(err)
	}
	w, err := me.CreateSlotRing(tp, RingShape{Slots: MaxRingSlots, Payload: MaxRingPayload, Readers: 1})
	if err == nil {
		w.Close(context.Background())
		t.Fatal("a ring of 4 GiB was made in a 32-bit process")
	}
	if !errors.Is(err, ErrTooLarge) || errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "32-bit process") {
		t.Fatalf("CreateSlotRing: %v, want ErrTooLarge saying what a 32-bit process maps", err)
	}
	if st, err := r.Snapshot(); err != nil || st.Corrupt != 0 {
		t.Errorf("snapshot: %d corrupt words counted, %v", st.Corrupt, err)
	}
}

// TestOpenFileLargerThanAnyRegion: a file larger than MaxRegionSize is no region, on any
// platform: Open says it is corrupt (not that this process cannot map it, as the 32-bit
// check first said on every platform).
func TestOpenFileLargerThanAnyRegion(t *testing.T) {
	dir := t.TempDir()
	f, err := os.OpenFile(filepath.Join(dir, "huge"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(MaxRegionSize + 1<<20); err != nil { // sparse: no byte is written
		f.Close()
		t.Skipf("this file system cannot hold a sparse file of %d bytes: %v", int64(MaxRegionSize+1<<20), err)
	}
	f.Close()
	r, err := Open("huge", Options{Dir: dir})
	if err == nil {
		r.Close()
		t.Fatal("Open of a file larger than any region succeeded")
	}
	if !errors.Is(err, ErrCorrupt) || errors.Is(err, ErrIncompatibleConfig) || !strings.Contains(err.Error(), "larger than any region") {
		t.Fatalf("Open: %v, want ErrCorrupt saying the file is larger than any region", err)
	}
}
