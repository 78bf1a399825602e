package peer

import (
	"runtime"
	"sync"
)

// The parent-death signal (Pdeathsig) is sent when the *thread* that forked the child ends,
// not the process, and Go ends threads while the process lives: a goroutine that exits
// locked to its thread takes the thread with it. So every child is forked on one goroutine
// locked to its thread, the spawner, which runs while any child it forked runs and only then
// unlocks (its thread goes back to the runtime's pool, with no child left to signal).

var spawner struct {
	mu   sync.Mutex
	live int         // children forked and not yet waited for
	reqs chan func() // to the spawner; nil when none runs
}

// spawn runs start (an exec.Cmd's Start) on the spawner. If it succeeds, spawned must be
// called once the child has been waited for.
func spawn(start func() error) error {
	spawner.mu.Lock()
	if spawner.reqs == nil {
		spawner.reqs = make(chan func())
		go spawnLoop(spawner.reqs)
	}
	spawner.live++ // keeps reqs open until our spawned
	reqs := spawner.reqs
	spawner.mu.Unlock()
	errc := make(chan error, 1)
	reqs <- func() { errc <- start() }
	err := <-errc
	if err != nil {
		spawned()
	}
	return err
}

// spawned records that a child forked by spawn has been waited for.
func spawned() {
	spawner.mu.Lock()
	defer spawner.mu.Unlock()
	if spawner.live--; spawner.live == 0 {
		close(spawner.reqs)
		spawner.reqs = nil
	}
}

func spawnLoop(reqs <-chan func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for f := range reqs {
		f()
	}
}
