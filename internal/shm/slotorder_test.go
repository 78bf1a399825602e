package shm

import (
	"bytes"
	"testing"
	"unsafe"
)

// TestSlotWordCopy: copyToSlot and copyFromSlot move every length of message, into and out of
// a word-aligned slot payload, to and from buffers at any offset. On weakly ordered machines
// they move a word at a time with atomic accesses (slotorder_weak.go), so the message's last,
// partial word is where they could go wrong; on the others they are plain copies.
func TestSlotWordCopy(t *testing.T) {
	const room = 96 // a slot's payload: a multiple of 32 bytes
	stage := make([]byte, room)
	slotMem := make([]uint64, room/8+1) // the slot, word-aligned, and a word past its end
	slot := unsafe.Slice((*byte)(unsafe.Pointer(&slotMem[0])), room+8)
	for n := 0; n <= room; n++ {
		for i := range stage {
			stage[i] = byte(n*7 + i + 1)
		}
		for i := range slot {
			slot[i] = 0xee
		}
		copyToSlot(unsafe.Pointer(&slot[0]), stage[:n])
		if !bytes.Equal(slot[:n], stage[:n]) {
			t.Fatalf("%d bytes: slot holds %x, want %x", n, slot[:n], stage[:n])
		}
		for i := room; i < len(slot); i++ {
			if slot[i] != 0xee {
				t.Fatalf("%d bytes: byte %d written, past the slot's payload", n, i)
			}
		}
		for off := range 8 {
			buf := make([]byte, off+n+8)
			for i := range buf {
				buf[i] = 0x55
			}
			copyFromSlot(buf[off:off+n], unsafe.Pointer(&slot[0]))
			if !bytes.Equal(buf[off:off+n], stage[:n]) {
				t.Fatalf("%d bytes at offset %d: copied out %x, want %x", n, off, buf[off:off+n], stage[:n])
			}
			for i, b := range buf {
				if (i < off || i >= off+n) && b != 0x55 {
					t.Fatalf("%d bytes at offset %d: byte %d of the buffer written, outside the message", n, off, i)
				}
			}
		}
	}
}

// TestSlotRingNextStagesOnWeakMachines: on a machine that may reorder stores (arm64, arm,
// ppc64, riscv64, ...), the area Next lends is not the slot: the caller's plain stores into
// the slot could be seen before the slot's busy mark, and a reader copying the slot as the
// writer laps it would take a torn message for a whole one. Next lends the staging buffer
// there, and Commit copies it into the slot with atomic stores. On x86 and s390x, which keep
// stores in order, Next lends the slot itself. Either way the message arrives whole.
func TestSlotRingNextStagesOnWeakMachines(t *testing.T) {
	r, me, _ := newTestRegion(t, "ring-next-weak")
	w, rr := ringPair(t, me, ringTopic(t, me, "ring.weak"))
	b, err := w.Next(10)
	if err != nil {
		t.Fatal(err)
	}
	base := uintptr(unsafe.Pointer(&r.mem[0]))
	inSlot := uintptr(unsafe.Pointer(&b[0])) >= base && uintptr(unsafe.Pointer(&b[0])) < base+uintptr(len(r.mem))
	if inSlot == weakOrder {
		t.Fatalf("Next lent an area in the region: %v, on a machine that reorders stores: %v", inSlot, weakOrder)
	}
	copy(b, "0123456789")
	if _, err := w.Commit(10, 0); err != nil {
		t.Fatal(err)
	}
	dst := make([]byte, w.Payload())
	m, err := pollRing(t, rr, dst)
	if err != nil || string(dst[:m.Len]) != "0123456789" {
		t.Fatalf("polled %q, %v", dst[:m.Len], err)
	}
}
