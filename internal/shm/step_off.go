//go:build !offqcheck

package shm

// step marks a point between two shared-memory operations of the inbox protocol, where the
// interleaving checker (internal/shm/interleave_test.go, built with -tags offqcheck) may switch
// to another goroutine. In normal builds it is empty and inlines to nothing.
func step() {}
