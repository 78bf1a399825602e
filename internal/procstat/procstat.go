// Package procstat reads what the kernel says of this process in /proc: the number of OS
// threads, which the doorbell's tests, its example and offq bench report.
package procstat

import (
	"errors"
	"os"
	"strconv"
	"strings"
)

// Threads returns this process's OS thread count (/proc/self/status, Threads).
func Threads() (int, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, errors.New("no Threads line in /proc/self/status")
}
