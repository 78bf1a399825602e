package topics

import (
	"hash/fnv"
	"testing"
)

func TestHash(t *testing.T) {
	for _, s := range []string{"", "a", "orders.eu.created", "é.名前", "\xff"} {
		h := fnv.New64a()
		h.Write([]byte(s))
		if got, want := Hash(s), h.Sum64(); got != want {
			t.Errorf("Hash(%q) = %#x, want %#x", s, got, want)
		}
	}
	// Pinned values: hashes are stored in shared memory and must never change.
	for s, want := range map[string]uint64{"": 0xcbf29ce484222325, "a": 0xaf63dc4c8601ec8c} {
		if got := Hash(s); got != want {
			t.Errorf("Hash(%q) = %#x, want %#x", s, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = Hash("orders.eu.created") }); n != 0 {
		t.Errorf("Hash allocates %v times per call, want 0", n)
	}
}
