package shm

import "testing"

// must returns v, and panics if err is set: for tests reading a snapshot of a region that is
// known to be whole.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

//go:noinline
func guardedNop(x *int) (err error) {
	defer unguard(guard(), &err)
	*x++
	return nil
}

//go:noinline
func plainNop(x *int) error {
	*x++
	return nil
}

// BenchmarkGuard: what the fault guard adds to a call (one defer and two SetPanicOnFault
// calls): the difference between guarded and plain.
func BenchmarkGuard(b *testing.B) {
	var x int
	b.Run("plain", func(b *testing.B) {
		for range b.N {
			plainNop(&x)
		}
	})
	b.Run("guarded", func(b *testing.B) {
		for range b.N {
			guardedNop(&x)
		}
	})
}
