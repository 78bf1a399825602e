package shm

import (
	"os"
	"slices"
	"strings"
)

// rdtsc reads the processor's time-stamp counter (RDTSC, not serialising).
//
//go:noescape
func rdtsc() uint64

// tscInvariant reports whether the time-stamp counter runs at a constant rate in every state
// and is the kernel's own clocksource, so that the kernel keeps it in step across CPUs:
// only then is it a clock (see tscClock).
func tscInvariant() bool {
	cs, err := os.ReadFile("/sys/devices/system/clocksource/clocksource0/current_clocksource")
	if err != nil || strings.TrimSpace(string(cs)) != "tsc" {
		return false
	}
	info, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(info), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "flags" {
			flags := strings.Fields(v)
			return slices.Contains(flags, "constant_tsc") && slices.Contains(flags, "nonstop_tsc")
		}
	}
	return false
}
