package procstat

import (
	"runtime"
	"sync"
	"testing"
)

// Threads counts a thread that a goroutine locks and keeps busy in a system call-free wait:
// the count with n goroutines locked to their threads is at least n.
func TestThreads(t *testing.T) {
	const n = 8
	var ready, done sync.WaitGroup
	ready.Add(n)
	stop := make(chan struct{})
	for range n {
		done.Add(1)
		go func() {
			defer done.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			ready.Done()
			<-stop
		}()
	}
	ready.Wait()
	got, err := Threads()
	close(stop)
	done.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if got < n {
		t.Fatalf("Threads() = %d with %d goroutines locked to threads of their own", got, n)
	}
}
