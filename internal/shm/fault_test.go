package shm

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// must returns v, and panics if err is set: for tests reading a snapshot of a region that is
// known to be whole.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

//go:noinline
func guardedNop(x *int) (err error) {
	defer unguard(guard(), &err)
	*x++
	return nil
}

//go:noinline
func plainNop(x *int) error {
	*x++
	return nil
}

// BenchmarkGuard: what the fault guard adds to a call (one defer and two SetPanicOnFault
// calls): the difference between guarded and plain.
func BenchmarkGuard(b *testing.B) {
	var x int
	b.Run("plain", func(b *testing.B) {
		for range b.N {
			plainNop(&x)
		}
	})
	b.Run("guarded", func(b *testing.B) {
		for range b.N {
			guardedNop(&x)
		}
	})
}

// TestGuardTruncated: after the region's file is cut to its first page, the doors return
// errors wrapping ErrCorrupt (in this process: the guard under test is what keeps it alive),
// and the zero-value accessors return zero values.
func TestGuardTruncated(t *testing.T) {
	cfg := DefaultConfig() // its tables run far past the first page
	cfg.Classes = []Class{{Size: 256, Count: 16}}
	r, err := Create("cut", Options{Dir: t.TempDir(), Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	me, err := r.Attach("test")
	if err != nil {
		t.Fatal(err)
	}
	tp, err := me.LookupTopic("t", true, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(r.Path(), 4096); err != nil {
		t.Fatal(err)
	}
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "memory fault") {
			t.Errorf("%s after the cut: %v, want a memory fault wrapping ErrCorrupt", what, err)
		}
	}
	_, err = r.Snapshot()
	check("Snapshot", err)
	_, err = r.Allocated()
	check("Allocated", err)
	_, err = me.Loan(16)
	check("Loan", err)
	_, err = r.Attach("late")
	check("Attach", err)
	_, err = me.OpenInbox(InboxConfig{Capacity: 4, Pattern: "t"})
	check("OpenInbox", err)
	_, err = me.LookupTopic("u", true, 0)
	check("LookupTopic", err)
	_, err = r.Reap()
	check("Reap", err)
	if n := tp.Name(); n != "" {
		t.Errorf("Name after the cut: %q, want \"\"", n)
	}
	check("Detach", me.Detach())
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestGuardPassesOtherPanics: the guard turns memory faults into errors and nothing else.
func TestGuardPassesOtherPanics(t *testing.T) {
	defer func() {
		if r := recover(); r != "not a fault" {
			t.Fatalf("recovered %v, want the original panic", r)
		}
	}()
	func() (err error) {
		defer unguard(guard(), &err)
		panic("not a fault")
	}()
}
