package shm

import (
	"bytes"
	"os"
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
	if err != nil || string(bytes.TrimSpace(cs)) != "tsc" {
		return false
	}
	info, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return false
	}
	for _, line := range bytes.Split(info, []byte("\n")) {
		if k, v, ok := bytes.Cut(line, []byte(":")); ok && string(bytes.TrimSpace(k)) == "flags" {
			flags := bytes.Fields(v)
			return hasField(flags, "constant_tsc") && hasField(flags, "nonstop_tsc")
		}
	}
	return false
}

func hasField(fields [][]byte, f string) bool {
	for _, x := range fields {
		if string(x) == f {
			return true
		}
	}
	return false
}
