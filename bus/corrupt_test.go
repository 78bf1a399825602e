package bus

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/offq/offq/internal/peer"
	"github.com/offq/offq/internal/shm"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestCorruptionWhileRunning: while a publisher and two subscriber processes run, this process
// writes random bytes at random places of the live region's tables and buffers (everything
// after the header). Nobody may crash or hang: every process ends normally when told to, and
// what it could not use is counted, not dereferenced.
func TestCorruptionWhileRunning(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	dir := t.TempDir()
	core, logs := observer.New(zap.WarnLevel)
	b, err := Open("chaos", WithDir(dir), WithReapInterval(0), WithLogger(zap.New(core)))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// Subscribers first (they report at the end), then publishers: one through the pool, one
	// through a slot ring that a subscriber reads.
	procs := []*peer.Proc{
		peer.Start(t, "chaos-sub", "OFFQ_DIR="+dir, "OFFQ_PATTERN=chaos.>"),
		peer.Start(t, "chaos-sub", "OFFQ_DIR="+dir, "OFFQ_PATTERN=chaos.a"),
		peer.Start(t, "chaos-sub", "OFFQ_DIR="+dir, "OFFQ_PATTERN=chaos.ring", "OFFQ_DEPTH=16"),
		peer.Start(t, "chaos-pub", "OFFQ_DIR="+dir, "OFFQ_TOPIC=chaos.a", "OFFQ_SCRIBBLED=1"),
		peer.Start(t, "chaos-pub", "OFFQ_DIR="+dir, "OFFQ_TOPIC=chaos.ring", "OFFQ_RING=1", "OFFQ_SCRIBBLED=1"),
	}
	const subs = 3
	for _, p := range procs {
		if _, err := p.Expect("ready", time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.OpenFile(shm.Path(dir, "chaos"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	size := int64(b.r.Size())
	const header = 1024
	scribbles := 0
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); scribbles++ {
		var junk [8]byte
		for i := range junk {
			junk[i] = byte(rng.Uint32())
		}
		off := header + rng.Int64N(size-header-8)
		if rng.IntN(2) == 0 {
			off &^= 7 // often a whole aligned word: a handle, a state, a position
		}
		if _, err := f.WriteAt(junk[:], off); err != nil {
			t.Fatal(err)
		}
		if scribbles%64 == 0 {
			<-time.After(time.Millisecond) // the load pattern: let the processes run
		}
	}
	for _, p := range procs[subs:] {
		p.CloseStdin()
	}
	for _, p := range procs[:subs] {
		p.CloseStdin()
		line, err := p.Expect("report ", time.Minute)
		if err != nil {
			t.Fatalf("a subscriber did not finish: %v", err)
		}
		var rep chaosReport
		json.Unmarshal([]byte(line), &rep)
		t.Logf("subscriber: %+v", rep)
	}
	for _, p := range procs {
		if err := p.Wait(time.Minute); err != nil {
			t.Errorf("%v: %v", p, err)
		}
	}
	st := b.r.Stats()
	fmt.Fprintf(os.Stderr, "corruption: %d scribbles of 8 bytes; %d corrupt words counted by the region\n", scribbles, st.Corrupt)
	if st.Corrupt == 0 {
		t.Fatalf("%d scribbles and not one bad word counted", scribbles)
	}
	// The damage is logged by the next round of the bus's background reaper (run here by hand).
	b.tick()
	found := logs.FilterMessageSnippet("bad data found in the region").All()
	if len(found) != 1 {
		t.Fatalf("want one warning of the bad data, got %v", logs.All())
	}
	if total, _ := found[0].ContextMap()["total"].(uint64); total < st.Corrupt {
		t.Fatalf("the warning reports %d bad words, the region counted %d", total, st.Corrupt)
	}
}
