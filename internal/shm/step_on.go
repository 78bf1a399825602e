//go:build offqcheck

package shm

// stepHook, when set, runs at every step: the interleaving checker uses it to decide which
// goroutine performs the next shared-memory operation. Only the checker sets it, while no
// goroutine but its own actors runs inbox code.
var stepHook func()

// step marks a point between two shared-memory operations of the inbox protocol (see
// step_off.go); in builds with -tags offqcheck it calls stepHook, if set.
func step() {
	if h := stepHook; h != nil {
		h()
	}
}
