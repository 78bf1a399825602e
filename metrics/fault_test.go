package metrics

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/internal/peer"
	"github.com/offq/offq/internal/shm"
)

// TestFaultGatherCutRegion: a bus exported with Register is scraped, then its region file is
// cut to its first page under the collector's mapping. The next Gather must report the fault
// as an error (the region's metrics are missing), not kill the process with SIGBUS. A fault
// kills the process that takes it, so the scrape runs in a child.
func TestFaultGatherCutRegion(t *testing.T) {
	p := peer.Start(t, "fault-gather", "OFFQ_DIR="+t.TempDir())
	line, err := p.Expect("gather:", 30*time.Second)
	if err != nil {
		t.Fatalf("%v: a scrape of a cut region must fail with an error, not kill the process", err)
	}
	if !strings.Contains(line, "region corrupt") || !strings.Contains(line, "memory fault") {
		t.Fatalf("Gather after the cut: %q, want an error wrapping ErrCorrupt about a memory fault", line)
	}
	if err := p.Wait(30 * time.Second); err != nil {
		t.Fatal(err)
	}
}

func roleFaultGather(c *peer.Child) error {
	dir := os.Getenv("OFFQ_DIR")
	b, err := bus.Open("cut", bus.WithDir(dir), bus.WithReapInterval(0))
	if err != nil {
		return err
	}
	defer b.Close()
	reg := prometheus.NewRegistry()
	col, err := Register(reg, b)
	if err != nil {
		return err
	}
	defer col.Close()
	if _, err := reg.Gather(); err != nil { // maps the region
		return err
	}
	if err := os.Truncate(shm.Path(dir, "cut"), 4096); err != nil {
		return err
	}
	_, err = reg.Gather()
	c.Send("gather: %v", strings.ReplaceAll(fmtErr(err), "\n", " "))
	return nil
}

func fmtErr(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}
