package floor

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// CPUs returns the CPUs the calling thread may run on, ascending.
func CPUs() ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("offq: sched_getaffinity: %w", err)
	}
	var out []int
	for i := 0; i < 8*int(unsafe.Sizeof(set)) && len(out) < set.Count(); i++ {
		if set.IsSet(i) {
			out = append(out, i)
		}
	}
	return out, nil
}

// PinThread locks the calling goroutine to its OS thread (runtime.LockOSThread) and that
// thread to cpu, for a measurement loop that must stay on one core while another process
// runs on another. If cpu < 0 it does nothing.
//
// The goroutine should end without calling runtime.UnlockOSThread: the runtime then ends the
// thread with it, so the affinity never leaks to other goroutines. If the affinity cannot be
// set, the goroutine stays locked and the error says why.
func PinThread(cpu int) error {
	if cpu < 0 {
		return nil
	}
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil { // 0: the calling thread
		if errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("offq: pin thread to cpu %d: not an allowed cpu", cpu)
		}
		return fmt.Errorf("offq: pin thread to cpu %d: %w", cpu, err)
	}
	return nil
}
