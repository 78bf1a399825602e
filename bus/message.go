package bus

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/offq/offq/internal/shm"
)

// Message is a received message: a small value naming a buffer in shared memory. Its Data
// aliases that buffer and is valid until Release (or, in Messages and Handle, until the loop
// body or handler returns); after that another process may reuse the buffer at any moment,
// so copy what you keep (Clone). A Message is safe to read from several goroutines; Release
// it once.
type Message struct {
	s   *Subscription
	h   shm.Handle
	idx int32
	buf shm.Buffer
}

// Data returns the payload, in shared memory, read-only by convention: other subscribers read
// the same bytes. If another process truncates the region's file under them, reading them
// (or calling Data, which reads the payload's length from the buffer's header) faults with
// SIGBUS and the Go runtime ends the process, as it would for any memory-mapped file: bus
// guards its own reads of shared memory, not the caller's. Code that must survive a truncated region (tools, generic
// forwarders) reads the payload through WriteTo, which reports the fault as an error wrapping
// ErrCorrupt.
func (m Message) Data() []byte {
	if m.s == nil {
		return nil
	}
	return m.buf.Data()
}

// Topic returns the topic the message was published on. Call it before Release.
func (m Message) Topic() string {
	if m.s == nil {
		return ""
	}
	return m.s.b.topicName(m.meta().Topic)
}

// meta reads the buffer's header under the fault guard: a zero Meta if the region's file was
// truncated under it.
func (m Message) meta() shm.Meta {
	defer shm.Unguard(shm.Guard(), nil)
	return m.buf.Meta()
}

// Seq returns the message's sequence number on its topic (1, 2, ... across all publishers).
// Like Data, it reads the buffer: call it before Release.
func (m Message) Seq() uint64 {
	if m.s == nil {
		return 0
	}
	return m.meta().Seq
}

// Time returns when the message was sent. Call it before Release.
func (m Message) Time() time.Time {
	if m.s == nil {
		return time.Time{}
	}
	return shm.Time(m.meta().Stamp)
}

// Age returns how long ago the message was sent, from the monotonic clock the sender stamped
// it with: exact across processes on one host, unaffected by changes to the wall clock. Call
// it before Release.
func (m Message) Age() time.Duration {
	if m.s == nil {
		return 0
	}
	return time.Duration(shm.Now() - m.meta().Stamp)
}

// Clone returns a copy of the payload in the process's own memory, or nil if the region's
// memory faults (its file was truncated: WriteTo says so).
func (m Message) Clone() []byte {
	defer shm.Unguard(shm.Guard(), nil)
	return append([]byte(nil), m.Data()...)
}

// WriteTo writes the payload to w, reading shared memory under the fault guard: if another
// process truncated the region's file under the payload, it fails with an error wrapping
// ErrCorrupt instead of killing the process. The guard covers w.Write, which runs in the
// calling goroutine. It implements io.WriterTo; call it before Release.
func (m Message) WriteTo(w io.Writer) (int64, error) {
	if m.s == nil {
		return 0, ErrReleased
	}
	n, err := m.writeTo(w)
	if errors.Is(err, ErrCorrupt) {
		err = fmt.Errorf("bus: read message on %q: %w", m.s.pattern, err)
	}
	return n, err
}

func (m Message) writeTo(w io.Writer) (_ int64, err error) {
	defer shm.Unguard(shm.Guard(), &err)
	n, err := w.Write(m.Data()) // Data reads the length from the buffer's header: guarded too
	return int64(n), err
}

// Release gives the message back. When every subscriber has released it (and the topic's
// history no longer keeps it), the buffer returns to its pool. Release of a message already
// released returns ErrReleased and changes nothing.
func (m Message) Release() error {
	if m.s == nil {
		return ErrReleased
	}
	if err := m.s.b.p.Unhold(int(m.idx), m.h); err != nil {
		if errors.Is(err, ErrCorrupt) {
			return fmt.Errorf("bus: release: %w", err)
		}
		return ErrReleased
	}
	return nil
}
