//go:build amd64 || 386 || s390x

package shm

import "unsafe"

// A slot ring's slot is a sequence lock: the writer marks the slot's sequence word busy, writes
// the header fields and the payload, and stores the word again; a reader that saw the word at
// s copies the slot out, then reads the word again, and keeps the copy only if it still shows
// s. That needs the writer's header and payload stores to be seen after its busy mark, and the
// reader's loads to be done before its second look at the word. These machines keep stores in
// order with stores and loads with loads (x86-TSO; z/Architecture), so the fields and the
// payload are plain accesses here: the atomic accesses of the sequence word keep the compiler
// from moving them. slotorder_weak.go is the other machines'.

// weakOrder reports whether this machine may reorder stores with stores or loads with loads.
const weakOrder = false

// setSlotTag stores slot sl's tag.
func setSlotTag(sl *ringSlot, tag uint32) { sl.tag = tag }

// slotTag reads slot sl's tag, which its writer (another process, or another goroutine) may be
// storing: a plain load, judged by the caller against the sequence word.
//
//go:norace
func slotTag(sl *ringSlot) uint32 { return sl.tag }

// putSlotHeader stores slot sl's header fields but its sequence word.
func putSlotHeader(sl *ringSlot, length, tag uint32, topicSeq uint64, stamp int64) {
	sl.length, sl.tag, sl.topicSeq, sl.stamp = length, tag, topicSeq, stamp
}

// slotHeader reads slot sl's length, topic sequence and stamp.
//
//go:norace
func slotHeaderOf(sl *ringSlot) (length uint32, topicSeq uint64, stamp int64) {
	return sl.length, sl.topicSeq, sl.stamp
}

// copyToSlot copies src into a slot's payload at p.
func copyToSlot(p unsafe.Pointer, src []byte) { copy(unsafe.Slice((*byte)(p), len(src)), src) }

// copyFromSlot copies len(dst) bytes of a slot's payload at p into dst.
//
//go:norace
func copyFromSlot(dst []byte, p unsafe.Pointer) { copy(dst, unsafe.Slice((*byte)(p), len(dst))) }
