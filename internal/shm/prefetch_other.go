//go:build !amd64

package shm

import "unsafe"

func prefetchWrite(p unsafe.Pointer) {}
