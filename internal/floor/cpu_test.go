package floor

import (
	"fmt"
	"slices"
	"testing"
)

func TestPinThread(t *testing.T) {
	cpus, err := CPUs()
	if err != nil {
		t.Fatal(err)
	}
	if len(cpus) == 0 || !slices.IsSorted(cpus) {
		t.Fatalf("CPUs() = %v", cpus)
	}
	if err := PinThread(-1); err != nil {
		t.Fatalf("PinThread(-1): %v", err)
	}
	errc := make(chan error, 1)
	go func() {
		// Ends locked: the runtime ends the pinned thread with the goroutine.
		if err := PinThread(cpus[len(cpus)-1]); err != nil {
			errc <- err
			return
		}
		got, err := CPUs()
		if err == nil && !slices.Equal(got, cpus[len(cpus)-1:]) {
			err = fmt.Errorf("pinned thread runs on %v", got)
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	go func() { errc <- PinThread(1 << 20) }()
	if err := <-errc; err == nil {
		t.Error("PinThread to a CPU that does not exist succeeded")
	}
}

func TestNow(t *testing.T) {
	a := Now()
	b := Now()
	if a <= 0 || b < a {
		t.Fatalf("Now went from %d to %d", a, b)
	}
}
