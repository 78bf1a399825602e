package shm

import (
	"testing"
	"unsafe"
)

// TestRoundTripStructsStartOnALine: the process-memory structs a ring's round trip reads start
// on a cache line, so that the fields each keeps together on its first lines are there (one
// line fetched again after the host interrupts a vCPU, not two: docs/performance.md, issue
// 15's sixteenth round). Before, InboxRing (160 bytes), RingReader (104), slotRing (96) and
// ringCopies (144) fell in size classes that are not whole lines, and most of them straddled.
func TestRoundTripStructsStartOnALine(t *testing.T) {
	if is64 == 0 {
		t.Skip("32-bit pointers: the structs are not padded to lines there")
	}
	check := func(name string, alloc func() unsafe.Pointer) {
		t.Helper()
		keep := make([]unsafe.Pointer, 0, 64)
		for range cap(keep) {
			p := alloc()
			keep = append(keep, p)
			if off := uintptr(p) % cacheLine; off != 0 {
				t.Errorf("a %s at %#x: %d bytes into its line", name, uintptr(p), off)
				return
			}
		}
	}
	check("SlotRing", func() unsafe.Pointer { return unsafe.Pointer(new(SlotRing)) })
	check("slotRing", func() unsafe.Pointer { return unsafe.Pointer(new(slotRing)) })
	check("RingReader", func() unsafe.Pointer { return unsafe.Pointer(new(RingReader)) })
	check("InboxRing", func() unsafe.Pointer { return unsafe.Pointer(new(InboxRing)) })
	check("ringCopies", func() unsafe.Pointer { return unsafe.Pointer(new(ringCopies)) })
}
