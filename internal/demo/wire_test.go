package demo

import "testing"

func TestPayloadRoundTrip(t *testing.T) {
	for _, n := range []int{minPayload, 17, 23, 24, 64, 255, 256, 4096} {
		b := make([]byte, n)
		writePayload(b, 1, 42)
		topic, seq, ok := checkPayload(b)
		if !ok || topic != 1 || seq != 42 {
			t.Fatalf("size %d: got topic %d seq %d ok %v", n, topic, seq, ok)
		}
		// Every single-bit flip is caught.
		for i := range b {
			for bit := range 8 {
				b[i] ^= 1 << bit
				if _, _, ok := checkPayload(b); ok {
					t.Fatalf("size %d: flip of bit %d of byte %d not detected", n, bit, i)
				}
				b[i] ^= 1 << bit
			}
		}
		// Another message's bytes are another message.
		c := make([]byte, n)
		writePayload(c, 1, 43)
		if string(b) == string(c) {
			t.Fatalf("size %d: seq 42 and 43 have the same payload", n)
		}
	}
	if _, _, ok := checkPayload(make([]byte, minPayload-1)); ok {
		t.Fatal("short payload accepted")
	}
}

func TestPayloadAllocs(t *testing.T) {
	b := make([]byte, 256)
	if n := testing.AllocsPerRun(100, func() {
		writePayload(b, 0, 7)
		checkPayload(b)
	}); n != 0 {
		t.Fatalf("%v allocations per write and check", n)
	}
}
