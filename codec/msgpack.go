package codec

import (
	"bytes"
	"fmt"
	"reflect"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// Msgpack is the MessagePack codec (github.com/vmihailenco/msgpack/v5, its default struct
// encoding: a map from field names, or their `msgpack` tags, to values). It carries any type
// that library does.
//
// Encode writes straight into the buffer it is given, which for a publisher is the loaned
// buffer in shared memory: no intermediate buffer and no second copy. When the encoding does
// not fit, Encode stops at the end of the buffer and returns ErrShortBuffer, and the publisher
// loans the next size class and encodes again.
//
// Decode reads the message in place. Before decoding it checks the message's structure
// without allocating (every length against the bytes that remain, at most MaxDepth levels of
// nesting, exactly one value): msgpack v5.4.1 sizes a slice from the length a message claims,
// so five bytes could otherwise make it ask for gigabytes, and nesting could drive its
// recursion as deep as the message is long.
//
// Integers are written in their shortest MessagePack form (5 is one byte even in an int64);
// decoding accepts every form.
//
// Allocations: encoding numbers, strings, byte slices and structs of them allocates nothing;
// decoding allocates what the decoded value owns: each string, slice and map (docs/codec.md
// has the figures). The zero value is ready to use; a *Msgpack is safe for concurrent use.
//
// MessagePack describes itself (a struct is a map from field names to values), so by default
// every Msgpack codec has the same fingerprint, whatever T is: a publisher of one Go type and
// a subscriber of another (a copy of it in another module, a struct with fewer fields, a
// map[string]any, `offq pub --json`) share a topic, and decoding matches fields by name. A
// codec made with StrictType fingerprints T's layout instead (as Struct does: field names,
// msgpack tags, kinds, sizes and offsets, not the type's name), so that only the same layout
// shares the topic with it.
type Msgpack[T any] struct {
	fp uint64
}

var _ Codec[struct{ X int }] = (*Msgpack[struct{ X int }])(nil)

// MsgpackOption configures NewMsgpack.
type MsgpackOption struct{ strict bool }

// StrictType makes a Msgpack codec's fingerprint T's layout (see TypeFingerprint) instead of
// the one every Msgpack codec shares, so that a topic it records carries only T's layout.
func StrictType() MsgpackOption { return MsgpackOption{strict: true} }

// msgpackFingerprint is the fingerprint every Msgpack codec that is not strict shares.
var msgpackFingerprint = fnv64("offq-type-v2 codec=msgpack self-describing")

// NewMsgpack returns the Msgpack codec of T.
func NewMsgpack[T any](opts ...MsgpackOption) *Msgpack[T] {
	for _, o := range opts {
		if o.strict {
			return &Msgpack[T]{fp: TypeFingerprint("msgpack", reflect.TypeFor[T]())}
		}
	}
	return &Msgpack[T]{fp: msgpackFingerprint}
}

// Name returns "msgpack".
func (*Msgpack[T]) Name() string { return "msgpack" }

// Fingerprint returns the fingerprint every Msgpack codec shares, or for one made with
// StrictType T's under "msgpack".
func (m *Msgpack[T]) Fingerprint() (uint64, error) {
	if m != nil && m.fp != 0 {
		return m.fp, nil
	}
	return msgpackFingerprint, nil
}

// SizeHint returns 0: the size is known only by encoding.
func (*Msgpack[T]) SizeHint(*T) int { return 0 }

// Encode encodes *v into dst, in place.
func (*Msgpack[T]) Encode(dst []byte, v *T) (int, error) {
	st := encoders.Get().(*encoderState)
	st.w = sliceWriter{b: dst}
	err := st.enc.Encode(v)
	n, full := st.w.n, st.w.full
	st.w = sliceWriter{}
	encoders.Put(st)
	switch {
	case full:
		return 0, ErrShortBuffer
	case err != nil:
		return 0, fmt.Errorf("codec: msgpack: encode %T: %w", v, err)
	}
	return n, nil
}

// Decode checks src and decodes it into v, which it first sets to T's zero value: nothing of
// what v held before (a previous message's map keys, say) survives into the result.
func (*Msgpack[T]) Decode(src []byte, v *T) error {
	if err := validateMsgpack(src); err != nil {
		return err
	}
	var zero T
	*v = zero
	st := decoders.Get().(*decoderState)
	st.r.Reset(src)
	st.dec.Reset(&st.r)
	err := st.dec.Decode(v)
	st.r.Reset(nil) // keep no reference to the message in the pool
	st.dec.Reset(&st.r)
	decoders.Put(st)
	if err != nil {
		return fmt.Errorf("codec: msgpack: decode %T: %w: %w", v, ErrMalformed, err)
	}
	return nil
}

// encoderState is an Encoder bound to a writer over a caller's buffer, pooled together so
// that Encode allocates neither.
type encoderState struct {
	enc *msgpack.Encoder
	w   sliceWriter
}

var encoders = sync.Pool{New: func() any {
	st := new(encoderState)
	st.enc = msgpack.NewEncoder(&st.w)
	st.enc.UseCompactInts(true) // 5 is one byte, whatever the Go type that holds it
	return st
}}

type decoderState struct {
	dec *msgpack.Decoder
	r   bytes.Reader
}

var decoders = sync.Pool{New: func() any {
	st := new(decoderState)
	st.dec = msgpack.NewDecoder(&st.r)
	return st
}}

// sliceWriter writes into a fixed buffer and fails, remembering it, when a write would go
// past its end: the encoder's writes land in the buffer itself, never in a copy.
type sliceWriter struct {
	b    []byte
	n    int
	full bool
}

func (w *sliceWriter) Write(p []byte) (int, error) {
	if len(p) > len(w.b)-w.n {
		w.full = true
		return 0, ErrShortBuffer
	}
	if len(p) < 256<<10 {
		copy(w.b[w.n:], p)
	} else {
		copyChunked(w.b[w.n:], p)
	}
	w.n += len(p)
	return len(p), nil
}

// WriteByte lets the encoder write single bytes without a slice (msgpack's writer interface).
func (w *sliceWriter) WriteByte(c byte) error {
	if w.n >= len(w.b) {
		w.full = true
		return ErrShortBuffer
	}
	w.b[w.n] = c
	w.n++
	return nil
}
