package shm

import (
	"slices"
	"strings"
)

// tscClockable reports whether the time-stamp counter may serve as a clock, given the kernel's
// current clocksource and /proc/cpuinfo: the counter must run at a constant rate in every
// state (constant_tsc and nonstop_tsc), and the kernel's own clock must be built on it, so
// that the kernel keeps it in step across CPUs. That is the case for two clocksources:
//
//   - tsc: the kernel reads the counter itself;
//   - kvm-clock: a KVM guest's clock, which the kernel computes from the counter with a
//     scale and an offset the host publishes. The vDSO reads it so only while the host marks
//     the counter stable across the guest's CPUs (otherwise every read is a system call);
//     without that mark the kernel corrects each CPU's reading and this conversion does not,
//     so a guest whose CPUs' counters disagree gets stamps off by that much, up to the
//     anchors' tolerance (10 µs), beyond which an anchor starts the calibration over. Some
//     hosts boot their guests with tsc=unstable (so that a guest may move between machines),
//     which leaves the kernel on kvm-clock; a counter that jumps or changes rate in such a
//     move is caught the same way, at the next anchor, a millisecond later at most
//     (tscClock).
//
// Any other clocksource (hpet, acpi_pm, a hypervisor's own page) keeps Now on the kernel's
// clock.
func tscClockable(clocksource, cpuinfo string) bool {
	switch strings.TrimSpace(clocksource) {
	case "tsc", "kvm-clock":
	default:
		return false
	}
	for line := range strings.SplitSeq(cpuinfo, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "flags" {
			flags := strings.Fields(v)
			return slices.Contains(flags, "constant_tsc") && slices.Contains(flags, "nonstop_tsc")
		}
	}
	return false
}
