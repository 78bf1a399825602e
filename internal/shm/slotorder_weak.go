//go:build !amd64 && !386 && !s390x

package shm

import (
	"sync/atomic"
	"unsafe"
)

// On these machines (arm64, arm, ppc64, riscv64 and the others) a store may be seen before an
// earlier one and a load done after a later one: a plain store of the payload could be seen
// before the busy mark the writer stored first, and a plain load of it done after the reader's
// second look at the sequence word, so that a copy torn by a writer lapping the reader would
// pass both looks (slotorder_tso.go says what the slot's sequence lock needs). The Go memory
// model orders atomic accesses among themselves, whatever the machine: so here every access to
// a slot's header fields and payload is atomic, a word at a time (arm64's LDAR and STLR).

const weakOrder = true

func setSlotTag(sl *ringSlot, tag uint32) { atomic.StoreUint32(&sl.tag, tag) }

func slotTag(sl *ringSlot) uint32 { return atomic.LoadUint32(&sl.tag) }

func putSlotHeader(sl *ringSlot, length, tag uint32, topicSeq uint64, stamp int64) {
	atomic.StoreUint32(&sl.length, length)
	atomic.StoreUint32(&sl.tag, tag)
	atomic.StoreUint64(&sl.topicSeq, topicSeq)
	atomic.StoreInt64(&sl.stamp, stamp)
}

func slotHeaderOf(sl *ringSlot) (length uint32, topicSeq uint64, stamp int64) {
	return atomic.LoadUint32(&sl.length), atomic.LoadUint64(&sl.topicSeq), atomic.LoadInt64(&sl.stamp)
}

const wordSize = unsafe.Sizeof(uintptr(0))

// copyToSlot stores src into a slot's payload at p a word at a time. The last word takes the
// bytes of src's backing array past its end, up to the word's end: the caller's src lies in a
// staging buffer as long as the slot's payload, a multiple of 32 bytes.
func copyToSlot(p unsafe.Pointer, src []byte) {
	n := uintptr(len(src))
	if n == 0 {
		return
	}
	s := unsafe.Pointer(unsafe.SliceData(src))
	for off := uintptr(0); off < n; off += wordSize {
		atomic.StoreUintptr((*uintptr)(unsafe.Add(p, off)), *(*uintptr)(unsafe.Add(s, off)))
	}
}

// copyFromSlot loads len(dst) bytes of a slot's payload at p into dst a word at a time (the
// payload is word-aligned, and its last word lies within the slot).
func copyFromSlot(dst []byte, p unsafe.Pointer) {
	n := uintptr(len(dst))
	off := uintptr(0)
	for ; off+wordSize <= n; off += wordSize {
		w := atomic.LoadUintptr((*uintptr)(unsafe.Add(p, off)))
		copy(dst[off:off+wordSize], unsafe.Slice((*byte)(unsafe.Pointer(&w)), wordSize))
	}
	if off < n {
		w := atomic.LoadUintptr((*uintptr)(unsafe.Add(p, off)))
		copy(dst[off:], unsafe.Slice((*byte)(unsafe.Pointer(&w)), wordSize)[:n-off])
	}
}
