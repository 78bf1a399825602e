package shm

import (
	"runtime"
	"sync"
	"testing"
	"time"
)

// calibratedClock returns a counter clock of its own (not Now's) once it has a rate: the
// conversion is tested on every amd64 machine, whichever clocksource the kernel uses (its
// clock follows the counter's ticks through the anchors either way). Bounded: the rate is
// measured over 50 ms.
func calibratedClock(t *testing.T) *tscClock {
	t.Helper()
	if runtime.GOARCH != "amd64" {
		t.Skip("no time-stamp counter read here: Now reads the kernel's clock")
	}
	c := &tscClock{on: true}
	deadline := nanotime() + int64(5*time.Second)
	for c.mult.Load() == 0 {
		if nanotime() > deadline {
			t.Fatal("no rate for the counter after 5 s")
		}
		c.now()
		time.Sleep(time.Millisecond) // the calibration measures 50 ms of the kernel's clock
	}
	return c
}

// Now reads the counter where the machine says it is a clock, and the kernel's clock
// otherwise; say which (the conversion's tests below run either way).
func TestNowMode(t *testing.T) {
	t.Logf("Now through the time-stamp counter: %v", tsc.on)
	if n, k := Now(), nanotime(); k-n > int64(time.Millisecond) || n-k > int64(time.Millisecond) {
		t.Fatalf("Now %d, the kernel's clock %d", n, k)
	}
}

// Now read through the counter agrees with the kernel's clock read around it, across anchors
// and from several goroutines at once: within 200 ns of the window between the two kernel
// readings, in all but a thousandth of the windows (a window the VM interrupted is left out).
// 200 ns, or four times the narrowest window where reading the clocks is slower (the race
// detector's build).
func TestNowFollowsTheKernelClock(t *testing.T) {
	c := calibratedClock(t)
	now := func() int64 { n, _ := c.now(); return n }
	narrowest := int64(time.Second)
	for range 1000 {
		lo := nanotime()
		now()
		narrowest = min(narrowest, nanotime()-lo)
	}
	slack := max(200, 4*narrowest)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var samples, bad int
	var worst int64
	for range 2 {
		wg.Go(func() {
			n, b := 0, 0
			var w int64
			end := nanotime() + int64(30*time.Millisecond) // thirty anchors
			for nanotime() < end {
				lo := nanotime()
				x := now()
				hi := nanotime()
				if hi-lo > slack {
					continue
				}
				n++
				if d := max(lo-x, x-hi); d > slack {
					b++
					w = max(w, d)
				}
			}
			mu.Lock()
			samples, bad, worst = samples+n, bad+b, max(worst, w)
			mu.Unlock()
		})
	}
	wg.Wait()
	if samples < 1000 {
		t.Fatalf("%d samples", samples)
	}
	if bad > samples/1000 {
		t.Fatalf("%d of %d readings more than %v outside the kernel's clock around them (worst %v)", bad, samples, time.Duration(slack), time.Duration(worst))
	}
}

// Two readings in a row do not go back by more than an anchor's jitter.
func TestNowDoesNotGoBack(t *testing.T) {
	c := calibratedClock(t)
	prev, _ := c.now()
	end := prev + int64(20*time.Millisecond)
	for n := prev; n < end; prev = n {
		n, _ = c.now()
		if n < prev-300 { // an anchor's pair of reads spans at most 200 ns (tscReadWindow)
			t.Fatalf("Now went back %v", time.Duration(prev-n))
		}
	}
}

// A counter that jumps (a conversion far off the kernel's clock at the next anchor) starts the
// calibration over instead of stamping with it.
func TestNowStartsOverAfterAJump(t *testing.T) {
	c := calibratedClock(t)
	c.ns0.Add(int64(time.Second)) // as if the counter had lost a second since the anchor
	c.span.Store(0)               // the next call anchors
	if n, _ := c.now(); n > nanotime() {
		t.Fatalf("a stamp %v ahead of the kernel's clock after the jump", time.Duration(n-nanotime()))
	}
	if c.mult.Load() != 0 {
		t.Fatal("the calibration survived a conversion a second off")
	}
	if n, _ := c.now(); n > nanotime() {
		t.Fatal("a stamp ahead of the kernel's clock while calibrating again")
	}
	for deadline := nanotime() + int64(5*time.Second); c.mult.Load() == 0; time.Sleep(time.Millisecond) {
		if nanotime() > deadline {
			t.Fatal("the clock did not calibrate again within 5 s")
		}
		c.now()
	}
}

func TestNowAllocatesNothing(t *testing.T) {
	if n := testing.AllocsPerRun(1000, func() { Now() }); n != 0 {
		t.Fatalf("Now allocates %v times", n)
	}
}

func TestScaleTicks(t *testing.T) {
	for _, c := range []struct{ d, m, want uint64 }{
		{3_000_000, 1 << 32, 3_000_000}, // 1 ns a tick
		{3_000_000, 1 << 31, 1_500_000}, // 0.5 ns a tick
		{1 << 40, 10 << 32, 10 << 40},   // 10 ns a tick, 2^40 ticks: past 64 bits in the product
		{12_345, 1_431_655_765, 4_114},  // 1/3 ns a tick (2^32/3 rounded down): 4,114.99, truncated
	} {
		if got := scaleTicks(c.d, c.m); got != c.want {
			t.Errorf("scaleTicks(%d, %d) = %d, want %d", c.d, c.m, got, c.want)
		}
	}
}

// The counter is a clock where the kernel's own clock is built on it and it is invariant:
// clocksource tsc, or a KVM guest's kvm-clock (this team's VM since its hosts began booting
// guests with tsc=unstable), each with constant_tsc and nonstop_tsc; not on any other
// clocksource, and not without both flags.
func TestTSCClockable(t *testing.T) {
	const invariant = "processor\t: 0\nflags\t\t: fpu tsc constant_tsc rep_good nopl nonstop_tsc cpuid tsc_known_freq\n"
	for _, c := range []struct {
		source, info string
		want         bool
	}{
		{"tsc\n", invariant, true},
		{"kvm-clock\n", invariant, true},
		{"hpet\n", invariant, false},
		{"acpi_pm\n", invariant, false},
		{"hyperv_clocksource_tsc_page\n", invariant, false},
		{"", invariant, false},
		{"kvm-clock\n", "flags\t\t: fpu tsc constant_tsc cpuid\n", false},
		{"tsc\n", "flags\t\t: fpu tsc nonstop_tsc\n", false},
		{"kvm-clock\n", "processor\t: 0\n", false},
	} {
		if got := tscClockable(c.source, c.info); got != c.want {
			t.Errorf("clocksource %q, cpuinfo %q: %v, want %v", c.source, c.info, got, c.want)
		}
	}
}
