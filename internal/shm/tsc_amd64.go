package shm

import "os"

// rdtsc reads the processor's time-stamp counter (RDTSC, not serialising).
//
//go:noescape
func rdtsc() uint64

// tscInvariant reports whether the time-stamp counter is a clock here (see tscClock and
// tscClockable), from the kernel's clocksource and the processor's flags.
func tscInvariant() bool {
	cs, err := os.ReadFile("/sys/devices/system/clocksource/clocksource0/current_clocksource")
	if err != nil {
		return false
	}
	info, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return false
	}
	return tscClockable(string(cs), string(info))
}
