package floor

import (
	"context"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// LinePattern says which cache lines a LinePingPong message touches, and with which locked
// operations.
type LinePattern uint8

const (
	// LinesOffq is offq's 1→1 common path with none of offq's logic: a buffer loaned from a
	// small pool (a slot-state compare-and-swap, the owner's allocation count, the payload
	// word, the end of the loan), its handle committed into a ring cell and the tail moved
	// (two compare-and-swaps), the consumer's four-step take (reserve a held entry, mark it
	// pending, claim the cell, the handle into the entry, empty the cell, move the head), the
	// payload read, and the release (clear the entry, drop the reference, the free count).
	// The consumer writes the cell's line and the slot's line the producer writes next.
	LinesOffq LinePattern = iota
	// LinesHeadOnly is the same with head-only takes: the consumer claims the message on the
	// head word (two compare-and-swaps on a line of its own) and never writes the cell, which
	// the producer reuses once a head it caches shows the previous lap taken.
	LinesHeadOnly
)

func (p LinePattern) String() string {
	switch p {
	case LinesOffq:
		return "offq-lines"
	case LinesHeadOnly:
		return "head-only"
	}
	return fmt.Sprintf("LinePattern(%d)", uint8(p))
}

// ParseLinePattern returns the LinePattern whose String is s.
func ParseLinePattern(s string) (LinePattern, error) {
	for p := LinesOffq; p <= LinesHeadOnly; p++ {
		if p.String() == s {
			return p, nil
		}
	}
	return 0, fmt.Errorf("offq: line ping-pong: unknown pattern %q", s)
}

// Layout of a LinePingPong file. Two inboxes (0: to the echo side, 1: back to the
// initiator), each with its head, tail and its consumer's held entry on lines of their own
// and linesCap cells, eight to a line; each side's allocation counts on a line of its own;
// the stop word; and a pool of linesSlots one-line slots (a state word, a payload word).
const (
	linesCap      = 64
	linesInbox    = 1024 // bytes per inbox
	linesHeadOff  = 0
	linesTailOff  = 64
	linesHeldOff  = 128
	linesCellsOff = 192
	linesShards   = 2048 // + 64 × side: allocs, frees
	linesStopOff  = 2176
	linesPoolOff  = 4096
	linesSlots    = 8
	linesFileSize = linesPoolOff + linesSlots*64

	// Cell words: empty for position p, p's handle of slot s, or claimed at p (LinesOffq).
	cellEmpty   = 1
	cellHandle  = 2
	cellClaimed = 3
	// Held entry words: free, reserved, pending (the handle follows), or the handle + 1.
	heldReserved = 1 << 62
	heldPending  = 1 << 63
	// Slot states: free, loaned, sent (one reference).
	slotLoaned = 1
	slotSent   = 2
	// A claimed head (LinesHeadOnly).
	headClaimed = 1 << 63
)

func cellWord(p uint64, kind uint64) uint64 { return p<<2 | kind }

// LinePingPong is a round trip through the cache lines and locked operations of one offq
// message each way, without offq's code (see LinePattern): what the hardware charges for a
// line pattern, to set beside RawPingPong (one word each way) and offq itself in one run. It
// is a measurement, not a transport: one initiator (Ping) and one echo (Echo), both spinning;
// it checks only what it needs to run.
type LinePingPong struct {
	mem    []byte
	pat    LinePattern
	side   int    // 0: initiator, 1: echo
	seq    uint64 // initiator: the last value sent
	cursor uint32 // the slot this side freed last (offq's per-process cursor)
	seen   uint64 // the head of the inbox this side sends to, as last read (LinesHeadOnly)
}

// CreateLinePingPong creates the file at path (which must not exist; mode 0600, symbolic links
// refused), maps it and sets up the cells, for the initiator.
func CreateLinePingPong(path string, pat LinePattern) (*LinePingPong, error) {
	if pat > LinesHeadOnly {
		return nil, fmt.Errorf("offq: line ping-pong: pattern %v", pat)
	}
	mem, err := createMapped(path, "line ping-pong", linesFileSize)
	if err != nil {
		return nil, err
	}
	p := &LinePingPong{mem: mem, pat: pat}
	for in := range 2 {
		for i := range uint64(linesCap) {
			p.cell(in, i).Store(cellWord(i, cellEmpty))
		}
	}
	return p, nil
}

// OpenLinePingPong maps the file CreateLinePingPong made at path, for the Echo side.
func OpenLinePingPong(path string, pat LinePattern) (*LinePingPong, error) {
	if pat > LinesHeadOnly {
		return nil, fmt.Errorf("offq: line ping-pong: pattern %v", pat)
	}
	mem, err := openMapped(path, "line ping-pong", "line ping-pong", linesFileSize)
	if err != nil {
		return nil, err
	}
	return &LinePingPong{mem: mem, pat: pat, side: 1, cursor: linesSlots / 2}, nil
}

func (p *LinePingPong) word(off int) *atomic.Uint64 {
	return (*atomic.Uint64)(unsafe.Pointer(&p.mem[off]))
}

func (p *LinePingPong) head(in int) *atomic.Uint64 { return p.word(in*linesInbox + linesHeadOff) }
func (p *LinePingPong) tail(in int) *atomic.Uint64 { return p.word(in*linesInbox + linesTailOff) }
func (p *LinePingPong) entry(in int) *atomic.Uint64 {
	return p.word(in*linesInbox + linesHeldOff)
}
func (p *LinePingPong) cell(in int, pos uint64) *atomic.Uint64 {
	return p.word(in*linesInbox + linesCellsOff + int(pos%linesCap)*8)
}
func (p *LinePingPong) state(s uint32) *atomic.Uint64 { return p.word(linesPoolOff + int(s)*64) }
func (p *LinePingPong) payload(s uint32) *atomic.Uint64 {
	return p.word(linesPoolOff + int(s)*64 + 8)
}
func (p *LinePingPong) shard(i int) *atomic.Uint64 { return p.word(linesShards + p.side*64 + i*8) }

// send loans a slot, writes v into it and commits it into inbox in.
func (p *LinePingPong) send(in int, v uint64) {
	s := p.cursor
	for !p.state(s).CompareAndSwap(0, slotLoaned) {
		s = (s + 1) % linesSlots
	}
	p.cursor = (s + 1) % linesSlots
	p.shard(0).Add(1)
	p.payload(s).Store(v)
	p.state(s).CompareAndSwap(slotLoaned, slotSent)
	h := uint64(s)
	for {
		t := p.tail(in).Load()
		c := p.cell(in, t)
		w := c.Load()
		free := w == cellWord(t, cellEmpty)
		if !free && p.pat == LinesHeadOnly && w&3 == cellHandle && w>>8 == t-linesCap {
			// The previous lap's handle: free once the head is past it.
			if p.seen <= t-linesCap {
				p.seen = p.head(in).Load() &^ headClaimed
			}
			free = p.seen > t-linesCap
		}
		if free && c.CompareAndSwap(w, (t<<8|h<<2)|cellHandle) {
			p.tail(in).CompareAndSwap(t, t+1)
			return
		}
	}
}

// take waits for the next message of inbox in and returns its slot and payload, or ok false
// when the stop word is set or ctx is done.
func (p *LinePingPong) take(ctx context.Context, in int) (s uint32, v uint64, err error) {
	hd, e := p.head(in), p.entry(in)
	for n := uint32(1); ; n++ {
		if n%rawRecheck == 0 {
			if p.word(linesStopOff).Load() != 0 {
				return 0, 0, errStopped
			}
			if err := ctx.Err(); err != nil {
				return 0, 0, err
			}
		}
		h := hd.Load()
		c := p.cell(in, h)
		w := c.Load()
		if hd.Load() != h {
			continue
		}
		if w&3 != cellHandle || w>>8 != h {
			if n%256 == 0 {
				// offq's waiting consumer spins on the head and its cell and looks at the
				// tail every 256 turns (a quick take, then the wait: shm tailEvery).
				_ = p.tail(in).Load()
			}
			continue
		}
		s = uint32(w>>2) & 63
		e.CompareAndSwap(0, heldReserved)
		e.Store(heldPending | uint64(s))
		if p.pat == LinesOffq {
			c.CompareAndSwap(w, cellWord(h, cellClaimed))
			_ = hd.Load()
			e.Store(uint64(s) + 1)
			c.CompareAndSwap(cellWord(h, cellClaimed), cellWord(h+linesCap, cellEmpty))
			hd.CompareAndSwap(h, h+1)
		} else {
			hd.CompareAndSwap(h, h|headClaimed)
			e.Store(uint64(s) + 1)
			hd.CompareAndSwap(h|headClaimed, h+1)
		}
		_ = p.state(s).Load() // the handle's generation is checked against the slot's state
		return s, p.payload(s).Load(), nil
	}
}

// release gives back slot s, taken from inbox in.
func (p *LinePingPong) release(in int, s uint32) {
	p.entry(in).CompareAndSwap(uint64(s)+1, 0)
	p.state(s).CompareAndSwap(slotSent, 0)
	p.shard(1).Add(1)
	p.cursor = s
}

var errStopped = fmt.Errorf("offq: line ping-pong: stopped")

// Ping makes one round trip as the bench's offq initiator does (Loan, Send, Receive,
// Release). It returns ctx.Err() if ctx is done first (looked at every 65536 polls).
func (p *LinePingPong) Ping(ctx context.Context) error {
	p.seq++
	p.send(0, p.seq)
	s, v, err := p.take(ctx, 1)
	if err != nil {
		return err
	}
	p.release(1, s)
	if v != p.seq {
		return fmt.Errorf("offq: line ping-pong: answer %d to ping %d", v, p.seq)
	}
	return nil
}

// Echo answers every Ping as the bench's offq echo does (Receive, Loan, Send, Release), until
// Stop (it returns nil) or until ctx is done (ctx.Err()).
func (p *LinePingPong) Echo(ctx context.Context) error {
	for {
		s, v, err := p.take(ctx, 0)
		if err == errStopped {
			return nil
		}
		if err != nil {
			return err
		}
		p.send(1, v)
		p.release(0, s)
	}
}

// Stop makes the Echo side return (within 65536 of its polls).
func (p *LinePingPong) Stop() { p.word(linesStopOff).Store(1) }

// Close unmaps the file; it does not remove it. No Ping or Echo may be under way.
func (p *LinePingPong) Close() error {
	if p.mem == nil {
		return nil
	}
	err := unix.Munmap(p.mem)
	p.mem = nil
	return err
}
