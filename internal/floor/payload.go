package floor

import (
	"context"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// PayloadShape says where a PayloadPingPong message's payload lives relative to the word that
// announces it.
type PayloadShape uint8

const (
	// PayloadTwoLines: the writer stores the payload into one of two slots, each on a cache
	// line of its own, then stores the announcement, which names the slot, on a third line;
	// the reader waits for the announcement and then reads the slot it names. The lines of any
	// ring of offsets into a pool (offq's among them) with nothing else: no claim, no
	// bookkeeping, no checks.
	PayloadTwoLines PayloadShape = iota
	// PayloadInline: the payload word sits on the announcement's own line, stored before it;
	// the reader reads both from the line it waited on. The lines of a ring of message slots
	// whose consumer polls the message's own header (as Aeron's subscribers poll a frame's
	// length word).
	PayloadInline
	// PayloadSlotRing: each direction is a ring of eight one-line message slots and a cursor
	// its reader alone writes. The writer fills the next slot's header (length, topic) and
	// payload, then stores its sequence word; the reader polls the sequence word of the slot at
	// its cursor, checks the length against the slot, reads the message from the line it
	// polled, and moves its cursor; the writer reads the cursor once a lap, before it reuses a
	// slot. The shape docs/slot-rings.md sketches, with its bookkeeping but no clock read.
	PayloadSlotRing
)

func (s PayloadShape) String() string {
	switch s {
	case PayloadTwoLines:
		return "two-lines"
	case PayloadInline:
		return "inline"
	case PayloadSlotRing:
		return "slot-ring"
	}
	return fmt.Sprintf("PayloadShape(%d)", uint8(s))
}

// ParsePayloadShape returns the PayloadShape whose String is s.
func ParsePayloadShape(s string) (PayloadShape, error) {
	for sh := PayloadTwoLines; sh <= PayloadSlotRing; sh++ {
		if sh.String() == s {
			return sh, nil
		}
	}
	return 0, fmt.Errorf("offq: payload ping-pong: unknown shape %q", s)
}

// Layout of a PayloadPingPong file: direction d (0: ping, 1: pong) announces on line d, with
// its inline payload word 8 bytes into that line, and has its two payload slots on lines
// 4+2d and 5+2d; the stop word is on line 8; with PayloadSlotRing, direction d's reader
// cursor is on line 10+d and its ring of slots starts at line 16+8d.
const (
	payFileSize   = 4096
	payInlineOff  = 8
	paySlotsOff   = 4 * 64
	payStopOff    = 8 * 64
	payStopped    = 1
	payAnnounceOf = 64 // bytes between the two directions' announcement lines
	payCursorOff  = 10 * 64
	payRingOff    = 16 * 64
	payRingSlots  = 8
	// A ring slot's line: the sequence word (0: never filled; n: message n), the length and
	// the topic (32 bits each), then the payload.
	slotSeq     = 0
	slotLen     = 8
	slotTopic   = 12
	slotPayload = 16
	slotRoom    = 64 - slotPayload // payload bytes on the slot's line
)

// PayloadPingPong is a round trip of one 8-byte payload each way between two processes, both
// spinning, with the payload on lines of its own (PayloadTwoLines) or on the line that
// announces it (PayloadInline): what the placement of a message's first bytes costs, beside
// RawPingPong (the announcement alone) and offq in one run. It is a measurement, not a
// transport: one initiator (Ping) and one echo (Echo), and it checks only that each answer
// carries the payload that was sent.
type PayloadPingPong struct {
	mem    []byte
	shape  PayloadShape
	seq    uint64    // initiator: the last value sent
	passed [2]uint64 // PayloadSlotRing: each direction's reader cursor as this side last read it
}

// CreatePayloadPingPong creates the file at path (which must not exist; mode 0600, symbolic
// links refused) and maps it, for the initiator.
func CreatePayloadPingPong(path string, sh PayloadShape) (*PayloadPingPong, error) {
	if sh > PayloadSlotRing {
		return nil, fmt.Errorf("offq: payload ping-pong: shape %v", sh)
	}
	mem, err := createMapped(path, "payload ping-pong", payFileSize)
	if err != nil {
		return nil, err
	}
	return &PayloadPingPong{mem: mem, shape: sh}, nil
}

// OpenPayloadPingPong maps the file CreatePayloadPingPong made at path, for the Echo side.
func OpenPayloadPingPong(path string, sh PayloadShape) (*PayloadPingPong, error) {
	if sh > PayloadSlotRing {
		return nil, fmt.Errorf("offq: payload ping-pong: shape %v", sh)
	}
	mem, err := openMapped(path, "payload ping-pong", "payload ping-pong", payFileSize)
	if err != nil {
		return nil, err
	}
	return &PayloadPingPong{mem: mem, shape: sh}, nil
}

func (p *PayloadPingPong) word(off int) *atomic.Uint64 {
	return (*atomic.Uint64)(unsafe.Pointer(&p.mem[off]))
}

// payload is the payload word at off: written and read with plain stores and loads, as a
// message's bytes are, ordered by the announcement's atomic store and load around them.
func (p *PayloadPingPong) payload(off int) *uint64 {
	return (*uint64)(unsafe.Pointer(&p.mem[off]))
}

// send announces message n of direction d with payload v. The announcement is n<<1 | slot:
// consecutive messages alternate between the direction's two slots, as consecutive loans of
// a pool do.
func (p *PayloadPingPong) send(d int, n, v uint64) {
	if p.shape == PayloadSlotRing {
		p.sendSlot(d, n, v)
		return
	}
	ann := p.word(d * payAnnounceOf)
	if p.shape == PayloadInline {
		*p.payload(d*payAnnounceOf + payInlineOff) = v
		ann.Store(n << 1)
		return
	}
	slot := n & 1
	*p.payload(paySlotsOff + (2*d+int(slot))*64) = v
	ann.Store(n<<1 | slot)
}

// take waits for message n of direction d and returns its payload, or errStopped when the
// stop word is set, or ctx.Err() (both looked at every 65536 polls).
func (p *PayloadPingPong) take(ctx context.Context, d int, n uint64) (uint64, error) {
	if p.shape == PayloadSlotRing {
		return p.takeSlot(ctx, d, n)
	}
	ann := p.word(d * payAnnounceOf)
	var a uint64
	for i := uint32(1); ; i++ {
		if a = ann.Load(); a>>1 == n {
			break
		}
		if i%rawRecheck == 0 {
			if p.word(payStopOff).Load() == payStopped {
				return 0, errStopped
			}
			if err := ctx.Err(); err != nil {
				return 0, err
			}
		}
	}
	if p.shape == PayloadInline {
		return *p.payload(d*payAnnounceOf + payInlineOff), nil
	}
	return *p.payload(paySlotsOff + (2*d+int(a&1))*64), nil
}

// slot returns the offset of the ring slot of message n (from 1) of direction d.
func slotOf(d int, n uint64) int {
	return payRingOff + (d*payRingSlots+int((n-1)%payRingSlots))*64
}

// sendSlot writes message n of direction d into its ring slot and publishes it. Before it
// reuses a slot (from the second lap on) it makes sure the reader has moved past the message
// the slot held, reading the reader's cursor only when the copy it last read does not say so.
// In a ping-pong that wait never spins: a reader moves its cursor before it answers.
func (p *PayloadPingPong) sendSlot(d int, n, v uint64) {
	if n > payRingSlots {
		for p.passed[d] < n-payRingSlots {
			p.passed[d] = p.word(payCursorOff + d*64).Load()
		}
	}
	at := slotOf(d, n)
	*(*uint32)(unsafe.Pointer(&p.mem[at+slotLen])) = 8
	*(*uint32)(unsafe.Pointer(&p.mem[at+slotTopic])) = uint32(d + 1)
	*p.payload(at + slotPayload) = v
	p.word(at + slotSeq).Store(n)
}

// takeSlot waits for message n of direction d in its ring slot, checks its header, reads its
// payload, and moves the cursor past it.
func (p *PayloadPingPong) takeSlot(ctx context.Context, d int, n uint64) (uint64, error) {
	at := slotOf(d, n)
	seq := p.word(at + slotSeq)
	for i := uint32(1); seq.Load() != n; i++ {
		if i%rawRecheck == 0 {
			if p.word(payStopOff).Load() == payStopped {
				return 0, errStopped
			}
			if err := ctx.Err(); err != nil {
				return 0, err
			}
		}
	}
	ln := *(*uint32)(unsafe.Pointer(&p.mem[at+slotLen]))
	topic := *(*uint32)(unsafe.Pointer(&p.mem[at+slotTopic]))
	if ln > slotRoom || topic != uint32(d+1) {
		return 0, fmt.Errorf("offq: payload ping-pong: slot of message %d: length %d, topic %d", n, ln, topic)
	}
	v := *p.payload(at + slotPayload)
	p.word(payCursorOff + d*64).Store(n)
	return v, nil
}

// Ping makes one round trip: it sends the next value and waits for the Echo side to send it
// back. It returns ctx.Err() if ctx is done first.
func (p *PayloadPingPong) Ping(ctx context.Context) error {
	p.seq++
	v := p.seq * 0x9e3779b97f4a7c15 // a payload that is not the announcement
	p.send(0, p.seq, v)
	got, err := p.take(ctx, 1, p.seq)
	if err != nil {
		return err
	}
	if got != v {
		return fmt.Errorf("offq: payload ping-pong: answer %#x to ping %d (payload %#x)", got, p.seq, v)
	}
	return nil
}

// Echo answers every Ping with its payload, until Stop (it returns nil) or until ctx is done
// (ctx.Err()).
func (p *PayloadPingPong) Echo(ctx context.Context) error {
	for n := uint64(1); ; n++ {
		v, err := p.take(ctx, 0, n)
		if err == errStopped {
			return nil
		}
		if err != nil {
			return err
		}
		p.send(1, n, v)
	}
}

// Stop makes the Echo side return (within 65536 of its polls).
func (p *PayloadPingPong) Stop() { p.word(payStopOff).Store(payStopped) }

// Close unmaps the file; it does not remove it. No Ping or Echo may be under way.
func (p *PayloadPingPong) Close() error {
	if p.mem == nil {
		return nil
	}
	err := unix.Munmap(p.mem)
	p.mem = nil
	return err
}
