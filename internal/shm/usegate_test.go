package shm

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// useGates runs f on a gate with per-P counters and on one with the shared counter only (the
// fallback without membarrier).
func useGates(t *testing.T, f func(t *testing.T, g *UseGate, closed *atomic.Bool)) {
	for _, fenced := range []bool{true, false} {
		name := "shared"
		if fenced {
			name = "per-P"
		}
		t.Run(name, func(t *testing.T) {
			var closed atomic.Bool
			f(t, newUseGate(&closed, fenced), &closed)
		})
	}
}

func TestUseGateCounts(t *testing.T) {
	useGates(t, func(t *testing.T, g *UseGate, closed *atomic.Bool) {
		if g.Busy() {
			t.Fatal("busy before any call")
		}
		if !g.Enter() || !g.Enter() {
			t.Fatal("Enter refused on an open gate")
		}
		g.Exit()
		if !g.Busy() {
			t.Fatal("not busy with a call under way")
		}
		g.Exit()
		if g.Busy() {
			t.Fatalf("busy after every call left (sum %d)", g.sum())
		}
		closed.Store(true)
		if g.Enter() {
			t.Fatal("Enter let a call in after closed was set")
		}
		if g.Busy() {
			t.Fatalf("a refused call stayed counted (sum %d)", g.sum())
		}
		g.WaitIdle()
	})
}

// A call that enters on one P and leaves on another leaves one counter at +1 and another at
// -1: the gate is idle all the same.
func TestUseGateCallMovesBetweenPs(t *testing.T) {
	var closed atomic.Bool
	g := newUseGate(&closed, true)
	if len(g.slots) < 2 {
		t.Skip("one P")
	}
	g.slots[0].n.Store(1)
	g.slots[1].n.Store(^uint64(0)) // -1
	if g.Busy() {
		t.Fatalf("busy with counters +1 and -1 (sum %d)", g.sum())
	}
	g.slots[1].n.Store(0)
	if !g.Busy() {
		t.Fatal("not busy with a call that entered and has not left")
	}
}

// WaitIdle returns only once the call under way has left.
func TestUseGateWaitsForTheCallUnderWay(t *testing.T) {
	useGates(t, func(t *testing.T, g *UseGate, closed *atomic.Bool) {
		if !g.Enter() {
			t.Fatal("Enter refused on an open gate")
		}
		var left atomic.Bool
		waited := make(chan struct{}, 1)
		testHookUseGateWaits = func() {
			select {
			case waited <- struct{}{}:
			default:
			}
		}
		defer func() { testHookUseGateWaits = nil }()
		closed.Store(true)
		done := make(chan bool)
		go func() {
			g.WaitIdle()
			done <- left.Load()
		}()
		select {
		case <-waited: // WaitIdle found the call under way
		case <-done:
			t.Fatal("WaitIdle returned with a call under way")
		case <-time.After(10 * time.Second):
			t.Fatal("WaitIdle never looked")
		}
		left.Store(true)
		g.Exit()
		select {
		case ok := <-done:
			if !ok {
				t.Fatal("WaitIdle returned before the call left")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("WaitIdle did not return after the call left")
		}
	})
}

// Goroutines enter and leave (moving between Ps as they go) while the gate is closed: once
// WaitIdle returns, none is inside, and none enters after.
func TestUseGateCloseWhileCallsRun(t *testing.T) {
	useGates(t, func(t *testing.T, g0 *UseGate, _ *atomic.Bool) {
		rounds := 200
		if testing.Short() {
			rounds = 20
		}
		for range rounds {
			var closed atomic.Bool
			g := newUseGate(&closed, g0.fenced)
			var inside, entries atomic.Int64
			var idle, late atomic.Bool
			var wg sync.WaitGroup
			for range 4 {
				wg.Go(func() {
					for {
						if !g.Enter() {
							return
						}
						if idle.Load() {
							late.Store(true)
						}
						inside.Add(1)
						entries.Add(1)
						runtime.Gosched() // leave, perhaps, on another P
						inside.Add(-1)
						g.Exit()
					}
				})
			}
			for entries.Load() < 100 {
				runtime.Gosched()
			}
			closed.Store(true)
			g.WaitIdle()
			idle.Store(true)
			if n := inside.Load(); n != 0 {
				t.Fatalf("WaitIdle returned with %d calls inside", n)
			}
			wg.Wait()
			if late.Load() {
				t.Fatal("a call entered after WaitIdle returned")
			}
		}
	})
}

func TestUseGateAllocatesNothing(t *testing.T) {
	useGates(t, func(t *testing.T, g *UseGate, _ *atomic.Bool) {
		if n := testing.AllocsPerRun(100, func() {
			if g.Enter() {
				g.Exit()
			}
		}); n != 0 {
			t.Fatalf("Enter and Exit allocate %v times", n)
		}
	})
}

// On a kernel with membarrier (Linux 4.14 and later, unless a seccomp filter refuses it) the
// gate uses its per-P counters; say which, since the fallback is correct but slower.
func TestUseGateMode(t *testing.T) {
	var closed atomic.Bool
	g := NewUseGate(&closed)
	t.Logf("per-P counters: %v (membarrier: %v)", g.fenced, barrierErr)
	if g.fenced && len(g.slots) < runtime.GOMAXPROCS(0) {
		t.Fatalf("%d counters for %d Ps", len(g.slots), runtime.GOMAXPROCS(0))
	}
}
