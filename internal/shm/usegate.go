package shm

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	_ "unsafe" // for go:linkname
)

// UseGate counts the calls of a process that are under way on a mapping, so that the one who
// closes it can wait until none is left before it detaches and unmaps, and refuse new ones.
//
// A counter that every call adds to and subtracts from costs two locked instructions a call,
// and its cache line moves between the cores of the goroutines that use it. UseGate keeps a
// counter per P of the Go scheduler instead, each on a cache line of its own, and a call
// updates the counter of the P it runs on with plain loads and stores while pinned to that P
// (runtime.procPin, as sync.Pool does): nothing else writes that word meanwhile. A call may
// leave on another P than it entered on, so one counter may go below zero; the sum is what
// counts.
//
// Enter stores its increment and then loads the closed flag, and x86 (like every other
// processor) may let that load pass the store: without a fence, a closer could set the flag,
// read the counters before the increment is visible, and unmap under a call that read the
// flag clear. The fence is paid by the closer, once, instead of by every call: WaitIdle asks
// the kernel for a memory barrier on every thread of the process (membarrier(2),
// MEMBARRIER_CMD_PRIVATE_EXPEDITED) after the flag is set. A call whose load of the flag ran
// before that barrier has its increment visible after it; a call whose load ran after it sees
// the flag, and takes its increment back on the same P before it unpins. So once the barrier
// has returned:
//
//   - no call enters any more, and a counter grows only for the moment between such a call's
//     increment and its taking back, which a reader may see (it then counts one call too many
//     and waits on);
//   - every call under way has its increment visible, and a call that has left may have its
//     decrement not yet seen (one too many again).
//
// So the sum WaitIdle reads is never below the number of calls under way, and when it reads
// zero none is.
//
// Where the kernel has no such barrier (before Linux 4.14, or a seccomp filter refuses it),
// or for a P beyond those counted when the gate was made (GOMAXPROCS raised later), a call
// falls back to a shared counter with locked instructions, as the gate did before.
type UseGate struct {
	closed *atomic.Bool
	fenced bool      // the closer's barrier is available: calls use slots
	slots  []useSlot // one per P
	spill  atomic.Int64
}

// useSlot is one P's counter, on a cache line of its own. It is written only by goroutines
// pinned to that P, and read by WaitIdle; two's complement: it may be below zero (see UseGate).
type useSlot struct {
	n atomic.Uint64
	_ [cacheLine - 8]byte
}

const cacheLine = 64

//go:linkname procPin runtime.procPin
func procPin() int

//go:linkname procUnpin runtime.procUnpin
func procUnpin()

// NewUseGate returns a gate whose calls are refused once *closed is set. Set it before
// WaitIdle.
func NewUseGate(closed *atomic.Bool) *UseGate { return newUseGate(closed, barrierReady()) }

// newUseGate is NewUseGate, with the per-P counters (fenced) or with the shared one only.
func newUseGate(closed *atomic.Bool, fenced bool) *UseGate {
	g := &UseGate{closed: closed, fenced: fenced}
	if fenced {
		g.slots = make([]useSlot, max(runtime.GOMAXPROCS(0), runtime.NumCPU()))
	}
	return g
}

// Enter counts a call in, and reports whether it may touch the mapping: false (counted out
// again) once closed is set. A call that entered must Exit.
func (g *UseGate) Enter() bool {
	if g.fenced {
		pid := procPin()
		if pid < len(g.slots) {
			n := &g.slots[pid].n
			storeRelease(n, n.Load()+1)
			ok := !g.closed.Load()
			if !ok {
				storeRelease(n, n.Load()-1) // on the same P: see UseGate
			}
			procUnpin()
			return ok
		}
		procUnpin()
	}
	g.spill.Add(1)
	if g.closed.Load() {
		g.spill.Add(-1)
		return false
	}
	return true
}

// Exit counts a call out, on whatever P it runs on now.
func (g *UseGate) Exit() {
	if g.fenced {
		pid := procPin()
		if pid < len(g.slots) {
			n := &g.slots[pid].n
			storeRelease(n, n.Load()-1)
			procUnpin()
			return
		}
		procUnpin()
	}
	g.spill.Add(-1)
}

// Busy reports whether calls may be under way: after closed is set and the barrier (see
// WaitIdle), false means none is.
func (g *UseGate) Busy() bool { return g.sum() > 0 }

func (g *UseGate) sum() int64 {
	s := g.spill.Load()
	for i := range g.slots {
		s += int64(g.slots[i].n.Load())
	}
	return s
}

// testHookUseGateWaits, if set, runs each time WaitIdle finds calls under way, before it
// sleeps: a test holds a call inside until it has seen WaitIdle wait for it.
var testHookUseGateWaits func()

// WaitIdle waits until no call is under way. closed must be set already, so that none can
// enter any more.
func (g *UseGate) WaitIdle() {
	if g.fenced {
		if processBarrier() != nil {
			// Registered, so the kernel has the command; should it fail all the same, the
			// stores it would have made visible are in store buffers that drain within
			// microseconds: wait that long, and many times more, instead.
			time.Sleep(time.Millisecond)
		}
	}
	for pause := time.Microsecond; g.Busy(); pause = min(2*pause, time.Millisecond) {
		if testHookUseGateWaits != nil {
			testHookUseGateWaits()
		}
		time.Sleep(pause)
	}
}

var (
	barrierOnce sync.Once
	barrierErr  error
)

// barrierReady reports whether processBarrier is available: the first call registers the
// process for it, and its answer holds for the life of the process.
func barrierReady() bool {
	barrierOnce.Do(func() { barrierErr = registerBarrier() })
	return barrierErr == nil
}

// processBarrier executes a memory barrier on every running thread of this process, through
// the kernel.
func processBarrier() error {
	if !barrierReady() {
		return barrierErr
	}
	return membarrier()
}
