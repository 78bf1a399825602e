package bus

import (
	"time"

	"github.com/offq/offq/internal/shm"
)

// Message is a received message: a small value naming a buffer in shared memory. Its Data
// aliases that buffer and is valid until Release (or, in Messages and Handle, until the loop
// body or handler returns); after that another process may reuse the buffer at any moment,
// so copy what you keep (Clone). A Message is safe to read from several goroutines; Release
// it once.
type Message struct {
	h shm.Held // first: a copy of the Message and of its Held then move the same 16-byte chunks
	s *Subscription
}

// Data returns the payload, in shared memory, read-only by convention: other subscribers read
// the same bytes.
func (m Message) Data() []byte {
	if m.s == nil {
		return nil
	}
	return m.h.Data()
}

// Topic returns the topic the message was published on. Call it before Release.
func (m Message) Topic() string {
	if m.s == nil {
		return ""
	}
	return m.s.b.topicName(m.h.Meta().Topic)
}

// Seq returns the message's sequence number on its topic (1, 2, ... across all publishers).
// Like Data, it reads the buffer: call it before Release.
func (m Message) Seq() uint64 {
	if m.s == nil {
		return 0
	}
	return m.h.Meta().Seq
}

// Time returns when the message was sent. Call it before Release.
func (m Message) Time() time.Time {
	if m.s == nil {
		return time.Time{}
	}
	return shm.Time(m.h.Meta().Stamp)
}

// Age returns how long ago the message was sent, from the monotonic clock the sender stamped
// it with: comparable across processes on one host (to within tens of nanoseconds where the
// stamps come from the time-stamp counter, each process's conversion anchored on the kernel's
// clock every millisecond: docs/performance.md), unaffected by changes to the wall clock. A
// message forwarded with its origin's time (WithTime) from a host whose clock is ahead may
// show an age below zero. Call it before Release.
func (m Message) Age() time.Duration {
	if m.s == nil {
		return 0
	}
	return time.Duration(shm.Now() - m.h.Meta().Stamp)
}

// TypeName returns the name of the Go type recorded on the message's topic with its codec
// ("main.Reading"; "" if none). Call it before Release.
func (m Message) TypeName() string {
	if m.s == nil {
		return ""
	}
	b := m.s.b
	if !b.enter() {
		return ""
	}
	defer b.exit()
	name, _ := b.r.TopicTypeName(int(m.h.Meta().Topic))
	return name
}

// Codec returns the codec name and type fingerprint recorded on the message's topic by its
// first typed publisher or subscriber ("" and 0 for a topic only untyped code has used). Call
// it before Release.
func (m Message) Codec() (name string, fingerprint uint64) {
	if m.s == nil {
		return "", 0
	}
	return m.s.b.topicCodec(m.h.Meta().Topic)
}

// Clone returns a copy of the payload in the process's own memory (nil if the region's file
// was truncated under it: see Read).
func (m Message) Clone() []byte {
	var out []byte
	m.Read(func(data []byte) error {
		out = append([]byte(nil), data...)
		return nil
	})
	return out
}

// Read calls fn with the payload, like Data, but under a fault guard: if the region's file
// was truncated under the message (by a faulty or hostile process), Read returns an error
// wrapping ErrCorrupt instead of the process dying of SIGBUS. Tools that print what others
// published use it; fn runs on the calling goroutine, so a writer it calls is covered too.
// Bus.Close waits for a Read under way (so fn must not close the Bus); after it, Read fails
// with ErrClosed.
func (m Message) Read(fn func(data []byte) error) error {
	if m.s == nil {
		return ErrReleased
	}
	b := m.s.b
	if !b.enter() {
		return b.closedError("read", m.s.pattern)
	}
	defer b.exit()
	return m.h.Read(fn)
}

// Release gives the message back. When every subscriber has released it (and the topic's
// history no longer keeps it), the buffer returns to its pool. Release of a message already
// released returns ErrReleased and changes nothing. Bus.Close releases every message still
// held: a Release after it (or while it runs) returns an error wrapping both ErrReleased and
// ErrClosed, and touches nothing; Close waits for a Release under way before it detaches.
func (m Message) Release() error {
	return release(m.s, &m.h) // inlined: the message is not copied for a call
}

// release is Message.Release of h, a message taken by s.
func release(s *Subscription, h *shm.Held) error {
	if s == nil {
		return ErrReleased
	}
	b := s.b
	if h.FromRing() {
		// A copy of a slot ring's message, in the process's memory: no gate.
		if b.closed.Load() {
			return &Error{Op: "release", Name: s.pattern, Err: errReleasedByClose}
		}
		return h.ReleaseCopy()
	}
	if !b.enter() {
		return &Error{Op: "release", Name: s.pattern, Err: errReleasedByClose}
	}
	defer b.exit()
	if testHookInUse != nil {
		testHookInUse("release")
	}
	return h.Release()
}
