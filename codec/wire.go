package codec

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// MaxDepth is how deeply arrays and maps may nest in a msgpack message that Msgpack.Decode
// or MsgpackToJSON accepts. Deeper messages are malformed: they would otherwise let a
// hostile writer drive the decoder's recursion as deep as the message is long.
const MaxDepth = 1000

// Preallocated errors of the wire walker: validating a bad message allocates nothing.
var (
	errTruncated = fmt.Errorf("%w: msgpack: truncated", ErrMalformed)
	errBadCode   = fmt.Errorf("%w: msgpack: the never-used code 0xc1", ErrMalformed)
	errTooDeep   = fmt.Errorf("%w: msgpack: nested deeper than %d", ErrMalformed, MaxDepth)
	errTrailing  = fmt.Errorf("%w: msgpack: bytes after the value", ErrMalformed)
	errEmpty     = fmt.Errorf("%w: msgpack: empty message", ErrMalformed)
)

// wire walks one msgpack value in b, checking every length against the bytes that remain,
// and, if out is not nil, appends the value to *out as JSON. It never reads outside b and
// never recurses deeper than MaxDepth.
type wire struct {
	b   []byte
	off int
	out *[]byte
}

// validateMsgpack checks that b holds exactly one well-formed msgpack value, nested at most
// MaxDepth deep, whose every claimed length fits in b. It allocates nothing.
func validateMsgpack(b []byte) error {
	if len(b) == 0 {
		return errEmpty
	}
	w := wire{b: b}
	if err := w.value(0); err != nil {
		return err
	}
	if w.off != len(b) {
		return errTrailing
	}
	return nil
}

// MsgpackToJSON writes the msgpack value src holds to w as one line of compact JSON, without
// knowing the Go type it was encoded from: it is how `offq sub --json` prints a topic whose
// codec is "msgpack". Maps become objects (keys that are not strings are written as their
// JSON text, quoted), binary data becomes a base64 string, a timestamp (extension -1) an
// RFC 3339 string in UTC, another extension {"ext":id,"data":"base64"}, and NaN and
// infinities the strings "NaN", "+Inf" and "-Inf". Strings that are not valid UTF-8 have
// their bad bytes replaced by U+FFFD. Nothing is written if src is not exactly one
// well-formed value (the error wraps ErrMalformed); the JSON is written with a single Write,
// followed by no newline. src is only read, so it may be a received message's bytes.
func MsgpackToJSON(w io.Writer, src []byte) error {
	if len(src) == 0 {
		return errEmpty
	}
	out := make([]byte, 0, 2*len(src)+16)
	wr := wire{b: src, out: &out}
	if err := wr.value(0); err != nil {
		return err
	}
	if wr.off != len(src) {
		return errTrailing
	}
	_, err := w.Write(out)
	return err
}

func (w *wire) take(n uint64) ([]byte, error) {
	if n > uint64(len(w.b)-w.off) {
		return nil, errTruncated
	}
	s := w.b[w.off : w.off+int(n)]
	w.off += int(n)
	return s, nil
}

func (w *wire) byte1() (byte, error) {
	if w.off >= len(w.b) {
		return 0, errTruncated
	}
	c := w.b[w.off]
	w.off++
	return c, nil
}

// uint reads an n-byte big-endian unsigned integer (n is 1, 2, 4 or 8).
func (w *wire) uint(n int) (uint64, error) {
	s, err := w.take(uint64(n))
	if err != nil {
		return 0, err
	}
	switch n {
	case 1:
		return uint64(s[0]), nil
	case 2:
		return uint64(binary.BigEndian.Uint16(s)), nil
	case 4:
		return uint64(binary.BigEndian.Uint32(s)), nil
	}
	return binary.BigEndian.Uint64(s), nil
}

func (w *wire) emit(s ...byte) {
	if w.out != nil {
		*w.out = append(*w.out, s...)
	}
}

func (w *wire) emitString(s string) {
	if w.out != nil {
		*w.out = append(*w.out, s...)
	}
}

// scalarSize[c] is the encoded size of a value that starts with code c and has a fixed size
// (numbers, nil, booleans, fixed extensions), or 0.
var scalarSize = func() (t [256]uint8) {
	for c := range 256 {
		switch {
		case c <= int(msgpcode.PosFixedNumHigh) || c >= int(msgpcode.NegFixedNumLow):
			t[c] = 1
		}
	}
	for c, n := range map[byte]uint8{
		msgpcode.Nil: 1, msgpcode.False: 1, msgpcode.True: 1,
		msgpcode.Uint8: 2, msgpcode.Uint16: 3, msgpcode.Uint32: 5, msgpcode.Uint64: 9,
		msgpcode.Int8: 2, msgpcode.Int16: 3, msgpcode.Int32: 5, msgpcode.Int64: 9,
		msgpcode.Float: 5, msgpcode.Double: 9,
		msgpcode.FixExt1: 3, msgpcode.FixExt2: 4, msgpcode.FixExt4: 6, msgpcode.FixExt8: 10, msgpcode.FixExt16: 18,
	} {
		t[c] = n
	}
	return t
}()

func (w *wire) value(depth int) error {
	if w.out == nil && w.off < len(w.b) {
		// Validation only: step over a fixed-size value in one go.
		if n := int(scalarSize[w.b[w.off]]); n > 0 {
			if n > len(w.b)-w.off {
				return errTruncated
			}
			w.off += n
			return nil
		}
	}
	c, err := w.byte1()
	if err != nil {
		return err
	}
	switch {
	case c <= msgpcode.PosFixedNumHigh:
		w.emitInt(int64(c))
		return nil
	case c >= msgpcode.NegFixedNumLow:
		w.emitInt(int64(int8(c)))
		return nil
	case msgpcode.IsFixedMap(c):
		return w.mapBody(uint64(c&msgpcode.FixedMapMask), depth)
	case msgpcode.IsFixedArray(c):
		return w.arrayBody(uint64(c&msgpcode.FixedArrayMask), depth)
	case msgpcode.IsFixedString(c):
		return w.str(uint64(c & msgpcode.FixedStrMask))
	}
	switch c {
	case msgpcode.Nil:
		w.emitString("null")
	case msgpcode.False:
		w.emitString("false")
	case msgpcode.True:
		w.emitString("true")
	case msgpcode.Uint8, msgpcode.Uint16, msgpcode.Uint32, msgpcode.Uint64:
		v, err := w.uint(1 << (c - msgpcode.Uint8))
		if err != nil {
			return err
		}
		if w.out != nil {
			*w.out = strconv.AppendUint(*w.out, v, 10)
		}
	case msgpcode.Int8, msgpcode.Int16, msgpcode.Int32, msgpcode.Int64:
		n := 1 << (c - msgpcode.Int8)
		v, err := w.uint(n)
		if err != nil {
			return err
		}
		shift := 64 - 8*n // sign-extend
		w.emitInt(int64(v<<shift) >> shift)
	case msgpcode.Float:
		v, err := w.uint(4)
		if err != nil {
			return err
		}
		w.emitFloat(float64(math.Float32frombits(uint32(v))), 32)
	case msgpcode.Double:
		v, err := w.uint(8)
		if err != nil {
			return err
		}
		w.emitFloat(math.Float64frombits(v), 64)
	case msgpcode.Str8, msgpcode.Str16, msgpcode.Str32:
		n, err := w.uint(1 << (c - msgpcode.Str8))
		if err != nil {
			return err
		}
		return w.str(n)
	case msgpcode.Bin8, msgpcode.Bin16, msgpcode.Bin32:
		n, err := w.uint(1 << (c - msgpcode.Bin8))
		if err != nil {
			return err
		}
		s, err := w.take(n)
		if err != nil {
			return err
		}
		if w.out != nil {
			*w.out = append(*w.out, '"')
			*w.out = base64.StdEncoding.AppendEncode(*w.out, s)
			*w.out = append(*w.out, '"')
		}
	case msgpcode.Array16, msgpcode.Array32:
		n, err := w.uint(2 << (c - msgpcode.Array16))
		if err != nil {
			return err
		}
		return w.arrayBody(n, depth)
	case msgpcode.Map16, msgpcode.Map32:
		n, err := w.uint(2 << (c - msgpcode.Map16))
		if err != nil {
			return err
		}
		return w.mapBody(n, depth)
	case msgpcode.FixExt1, msgpcode.FixExt2, msgpcode.FixExt4, msgpcode.FixExt8, msgpcode.FixExt16:
		return w.ext(1 << (c - msgpcode.FixExt1))
	case msgpcode.Ext8, msgpcode.Ext16, msgpcode.Ext32:
		n, err := w.uint(1 << (c - msgpcode.Ext8))
		if err != nil {
			return err
		}
		return w.ext(n)
	default: // 0xc1
		return errBadCode
	}
	return nil
}

func (w *wire) arrayBody(n uint64, depth int) error {
	if depth >= MaxDepth {
		return errTooDeep
	}
	if n > uint64(len(w.b)-w.off) { // every element takes at least a byte
		return errTruncated
	}
	w.emit('[')
	for i := range n {
		if i > 0 {
			w.emit(',')
		}
		if err := w.value(depth + 1); err != nil {
			return err
		}
	}
	w.emit(']')
	return nil
}

func (w *wire) mapBody(n uint64, depth int) error {
	if depth >= MaxDepth {
		return errTooDeep
	}
	if n > uint64(len(w.b)-w.off)/2 { // every entry takes at least two bytes
		return errTruncated
	}
	w.emit('{')
	for i := range n {
		if i > 0 {
			w.emit(',')
		}
		if err := w.key(depth + 1); err != nil {
			return err
		}
		w.emit(':')
		if err := w.value(depth + 1); err != nil {
			return err
		}
	}
	w.emit('}')
	return nil
}

// key writes a map key: a string as itself, anything else as its JSON text, quoted.
func (w *wire) key(depth int) error {
	if w.off < len(w.b) && isString(w.b[w.off]) || w.out == nil {
		return w.value(depth)
	}
	saved := w.out
	var text []byte
	w.out = &text
	err := w.value(depth)
	w.out = saved
	if err != nil {
		return err
	}
	*w.out = appendJSONString(*w.out, text)
	return nil
}

func isString(c byte) bool { return msgpcode.IsString(c) }

func (w *wire) str(n uint64) error {
	s, err := w.take(n)
	if err != nil {
		return err
	}
	if w.out != nil {
		*w.out = appendJSONString(*w.out, s)
	}
	return nil
}

func (w *wire) ext(n uint64) error {
	typ, err := w.byte1()
	if err != nil {
		return err
	}
	data, err := w.take(n)
	if err != nil {
		return err
	}
	if w.out == nil {
		return nil
	}
	if int8(typ) == -1 {
		if t, ok := extTime(data); ok {
			*w.out = append(*w.out, '"')
			*w.out = t.UTC().AppendFormat(*w.out, time.RFC3339Nano)
			*w.out = append(*w.out, '"')
			return nil
		}
	}
	*w.out = append(*w.out, `{"ext":`...)
	*w.out = strconv.AppendInt(*w.out, int64(int8(typ)), 10)
	*w.out = append(*w.out, `,"data":"`...)
	*w.out = base64.StdEncoding.AppendEncode(*w.out, data)
	*w.out = append(*w.out, `"}`...)
	return nil
}

// extTime decodes the msgpack timestamp extension's three forms.
func extTime(b []byte) (time.Time, bool) {
	switch len(b) {
	case 4:
		return time.Unix(int64(binary.BigEndian.Uint32(b)), 0), true
	case 8:
		v := binary.BigEndian.Uint64(b)
		ns := v >> 34
		if ns > 999999999 {
			return time.Time{}, false
		}
		return time.Unix(int64(v&(1<<34-1)), int64(ns)), true
	case 12:
		ns := binary.BigEndian.Uint32(b)
		if ns > 999999999 {
			return time.Time{}, false
		}
		t := time.Unix(int64(binary.BigEndian.Uint64(b[4:])), int64(ns))
		if y := t.Year(); y < 0 || y > 9999 { // RFC 3339 has four-digit years
			return time.Time{}, false
		}
		return t, true
	}
	return time.Time{}, false
}

func (w *wire) emitInt(v int64) {
	if w.out != nil {
		*w.out = strconv.AppendInt(*w.out, v, 10)
	}
}

func (w *wire) emitFloat(f float64, bits int) {
	if w.out == nil {
		return
	}
	switch {
	case math.IsNaN(f):
		*w.out = append(*w.out, `"NaN"`...)
	case math.IsInf(f, 1):
		*w.out = append(*w.out, `"+Inf"`...)
	case math.IsInf(f, -1):
		*w.out = append(*w.out, `"-Inf"`...)
	default:
		*w.out = strconv.AppendFloat(*w.out, f, 'g', -1, bits)
	}
}

// appendJSONString appends s as a JSON string: quotes, backslashes and control characters
// escaped, bytes that are not UTF-8 replaced by U+FFFD.
func appendJSONString(dst, s []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20 || c == 0x7f:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}
