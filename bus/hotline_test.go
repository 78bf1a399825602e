package bus

import (
	"testing"
	"unsafe"
)

// TestMessagePathFieldsOnOneLine: the fields of Publisher, Subscription and Bus that the
// message path reads lie on one cache line of each, one line to fetch again after the host
// interrupts a vCPU, not three (docs/performance.md, issue 15's sixteenth round). Publisher and
// Subscription are a whole number of lines long, so that the allocator's size class for them
// is too and each starts on a line (package bus may not import unsafe, so this test checks it,
// where internal/shm has compile-time checks). A Bus, over 512 bytes, starts 8 bytes into its
// line (the allocator's header for an object that large is before it), so its fields are
// checked where they land, not only from a line's start.
func TestMessagePathFieldsOnOneLine(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) < 8 {
		t.Skip("32-bit pointers: the structs are not padded to lines there")
	}
	check := func(name string, hot uintptr, alloc func() unsafe.Pointer) {
		t.Helper()
		keep := make([]unsafe.Pointer, 0, 64)
		for range cap(keep) {
			p := alloc()
			keep = append(keep, p)
			if off := uintptr(p) % 64; off+hot > 64 {
				t.Errorf("a %s at %#x, %d bytes into its line: its first %d bytes, read by the message path, span more than one line", name, uintptr(p), off, hot)
				return
			}
		}
	}
	for name, size := range map[string]uintptr{"Publisher": unsafe.Sizeof(Publisher{}), "Subscription": unsafe.Sizeof(Subscription{})} {
		if size%64 != 0 {
			t.Errorf("a %s is %d bytes: not a whole number of lines", name, size)
		}
	}
	check("Publisher", unsafe.Offsetof(Publisher{}.noCopies)+8, func() unsafe.Pointer { return unsafe.Pointer(new(Publisher)) })
	check("Subscription", unsafe.Offsetof(Subscription{}.in)+16, func() unsafe.Pointer { return unsafe.Pointer(new(Subscription)) })
	check("Bus", unsafe.Offsetof(Bus{}.closed)+1, func() unsafe.Pointer { return unsafe.Pointer(new(Bus)) })
}
