package shm

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// membarrier(2) commands (linux/membarrier.h).
const (
	membarrierQuery                    = 0
	membarrierPrivateExpedited         = 1 << 3
	membarrierRegisterPrivateExpedited = 1 << 4
)

var errNoBarrier = errors.New("membarrier: no private expedited command")

// registerBarrier registers the process for process-wide memory barriers, if the kernel has
// them.
func registerBarrier() error {
	cmds, _, e := unix.Syscall(unix.SYS_MEMBARRIER, membarrierQuery, 0, 0)
	if e != 0 {
		return fmt.Errorf("membarrier query: %w", e)
	}
	if cmds&membarrierPrivateExpedited == 0 || cmds&membarrierRegisterPrivateExpedited == 0 {
		return errNoBarrier
	}
	if _, _, e := unix.Syscall(unix.SYS_MEMBARRIER, membarrierRegisterPrivateExpedited, 0, 0); e != 0 {
		return fmt.Errorf("membarrier register: %w", e)
	}
	return nil
}

// membarrier executes a full memory barrier on every thread of the process that is running
// now (the others are not running, and switching them out was one).
func membarrier() error {
	if _, _, e := unix.Syscall(unix.SYS_MEMBARRIER, membarrierPrivateExpedited, 0, 0); e != 0 {
		return fmt.Errorf("membarrier: %w", e)
	}
	return nil
}
