package floor

import (
	"context"
	"path/filepath"
	"testing"
	"time"
	"unsafe"
)

// TestPayloadPingPong passes 2000 payloads back and forth in both shapes (two goroutines stand
// in for the two processes), checks that every answer carries the payload sent (Ping does),
// that the slots hold the last payloads where the shape puts them, and that Stop ends the echo.
func TestPayloadPingPong(t *testing.T) {
	for _, sh := range []PayloadShape{PayloadTwoLines, PayloadInline, PayloadSlotRing} {
		t.Run(sh.String(), func(t *testing.T) {
			if got, err := ParsePayloadShape(sh.String()); err != nil || got != sh {
				t.Fatalf("ParsePayloadShape(%q) = %v, %v", sh.String(), got, err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			path := filepath.Join(t.TempDir(), "payload")
			a, err := CreatePayloadPingPong(path, sh)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			b, err := OpenPayloadPingPong(path, sh)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			pingEcho(ctx, t, a, b, 2000)
			n := uint64(2000)
			last := n * 0x9e3779b97f4a7c15
			for d := range 2 {
				var at int
				switch sh {
				case PayloadInline:
					at = d*payAnnounceOf + payInlineOff
				case PayloadTwoLines:
					at = paySlotsOff + (2*d+0)*64 // message 2000 is even: slot 0
				case PayloadSlotRing:
					at = slotOf(d, n) + slotPayload // the last of eight slots
				}
				if got := a.word(at).Load(); got != last {
					t.Errorf("direction %d: payload word %#x, want %#x", d, got, last)
				}
				if sh == PayloadSlotRing {
					if seq, cur := a.word(slotOf(d, n)+slotSeq).Load(), a.word(payCursorOff+d*64).Load(); seq != n || cur != n {
						t.Errorf("direction %d: last slot's sequence %d, reader's cursor %d, want %d", d, seq, cur, n)
					}
					continue
				}
				if got := a.word(d * payAnnounceOf).Load(); got>>1 != 2000 {
					t.Errorf("direction %d: announcement %#x, want message 2000", d, got)
				}
			}
		})
	}
	if _, err := ParsePayloadShape("nope"); err == nil {
		t.Error("ParsePayloadShape(nope): no error")
	}
}

// TestPayloadPingPongCancel: with no echo, Ping returns when its context is done, and Create
// refuses a file that exists.
func TestPayloadPingPongCancel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "payload")
	a, err := CreatePayloadPingPong(path, PayloadInline)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := CreatePayloadPingPong(path, PayloadInline); err == nil {
		t.Error("CreatePayloadPingPong over an existing file: no error")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := a.Ping(ctx); err != context.DeadlineExceeded {
		t.Errorf("Ping with no echo: %v, want %v", err, context.DeadlineExceeded)
	}
}

// pingEcho runs b's Echo in a goroutine (standing in for the other process), makes n round
// trips with a, stops the echo and checks that it returned nil.
func pingEcho(ctx context.Context, t *testing.T, a interface {
	Ping(context.Context) error
	Stop()
}, b interface{ Echo(context.Context) error }, n int) {
	t.Helper()
	echoed := make(chan error, 1)
	go func() { echoed <- b.Echo(ctx) }()
	for i := range n {
		if err := a.Ping(ctx); err != nil {
			a.Stop()
			<-echoed
			t.Fatalf("round %d: %v", i, err)
		}
	}
	a.Stop()
	if err := <-echoed; err != nil {
		t.Fatalf("Echo after Stop: %v", err)
	}
}

// TestPayloadSlotRingChecksHeader: a slot whose length does not fit its line is an error, not
// a read past the slot.
func TestPayloadSlotRingChecksHeader(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ring")
	a, err := CreatePayloadPingPong(path, PayloadSlotRing)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	a.send(0, 1, 42)
	if v, err := a.take(context.Background(), 0, 1); err != nil || v != 42 {
		t.Fatalf("take of message 1: %d, %v", v, err)
	}
	a.send(0, 2, 43)
	*(*uint32)(unsafe.Pointer(&a.mem[slotOf(0, 2)+slotLen])) = 4096
	if _, err := a.take(context.Background(), 0, 2); err == nil {
		t.Error("take of a slot whose length is 4096: no error")
	}
}
