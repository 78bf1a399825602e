//go:build !amd64

package shm

func rdtsc() uint64 { return 0 }

func tscInvariant() bool { return false }
