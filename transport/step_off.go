//go:build !offqcheck

package transport

// step marks a point between two shared-memory operations of the inbox protocol, where the
// interleaving checker (transport/interleave_test.go, built with -tags offqcheck) may switch
// to another goroutine. In normal builds it is empty and inlines to nothing.
func step() {}
