// Package pubsrc is where offq pub's messages come from: one payload (--data), generated
// payloads of a size (--size), the lines of a file or of standard input (--file, or none), and
// the JSON text of --json turned into MessagePack.
package pubsrc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/offq/offq/codec"
)

// Next yields message i (counting from 0); io.EOF ends the messages.
type Next func(ctx context.Context, i int) ([]byte, error)

// Fixed yields msg every time.
func Fixed(msg []byte) Next {
	return func(context.Context, int) ([]byte, error) { return msg, nil }
}

// Generated yields payloads of size bytes, "message N " repeated, N counting from 1. Each
// call reuses the buffer of the last one.
func Generated(size int) Next {
	buf := make([]byte, size)
	return func(_ context.Context, i int) ([]byte, error) { return generated(buf, i+1), nil }
}

// Lines yields the lines of the file at path, without their newlines, or of stdin when path is
// "" or "-"; a line longer than largest bytes is an error. closeSrc ends the reading and closes
// the file.
func Lines(path string, stdin io.Reader, largest int) (next Next, closeSrc func(), err error) {
	r := stdin
	var f *os.File
	if path != "" && path != "-" {
		if f, err = os.Open(path); err != nil {
			return nil, nil, err
		}
		r = f
	}
	// Lines are read on a goroutine of their own, so that an interrupt ends pub while it
	// waits for input. It ends at the end of the input, or when pub is done with it; one
	// blocked reading standard input ends with the process.
	type line struct {
		b   []byte
		err error
	}
	lines, done := make(chan line, 64), make(chan struct{})
	closeSrc = func() {
		close(done)
		if f != nil {
			f.Close()
		}
	}
	go func() {
		defer close(lines)
		send := func(l line) bool {
			select {
			case lines <- l:
				return true
			case <-done:
				return false
			}
		}
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), largest+1)
		for sc.Scan() {
			if !send(line{b: bytes.Clone(sc.Bytes())}) {
				return
			}
		}
		err := sc.Err()
		if errors.Is(err, bufio.ErrTooLong) {
			err = fmt.Errorf("a line is longer than the largest buffer (%d bytes)", largest)
		}
		if err == nil {
			err = io.EOF
		}
		send(line{err: err})
	}()
	return func(ctx context.Context, _ int) ([]byte, error) {
		select {
		case l, ok := <-lines:
			if !ok {
				return nil, io.EOF
			}
			return l.b, l.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}, closeSrc, nil
}

// generated fills buf with "message N " repeated and returns it.
func generated(buf []byte, n int) []byte {
	text := "message " + strconv.Itoa(n) + " "
	for i := 0; i < len(buf); i += copy(buf[i:], text) {
	}
	return buf
}

// JSON turns JSON text into MessagePack with package codec (offq pub --json).
type JSON struct {
	limit int // largest message
	buf   []byte
	mp    codec.Msgpack[any]
}

// NewJSON returns a JSON encoder of messages up to limit bytes.
func NewJSON(limit int) *JSON { return &JSON{limit: limit} }

// Encode returns the MessagePack form of the one JSON value in text, in a buffer that the next
// call reuses. Numbers become integers where they fit, floats otherwise.
func (j *JSON) Encode(text []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(text))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("--json: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("--json: more than one JSON value in a message")
	}
	v, err := jsonNumbers(v)
	if err != nil {
		return nil, fmt.Errorf("--json: %w", err)
	}
	if len(j.buf) == 0 {
		j.buf = make([]byte, min(4096, j.limit))
	}
	for {
		n, err := j.mp.Encode(j.buf, &v)
		if err == nil {
			return j.buf[:n], nil
		}
		if !errors.Is(err, codec.ErrShortBuffer) {
			return nil, err
		}
		if len(j.buf) >= j.limit {
			return nil, fmt.Errorf("encoded message larger than the largest buffer (%d bytes)", j.limit)
		}
		j.buf = make([]byte, min(2*len(j.buf), j.limit))
	}
}

// jsonNumbers replaces the json.Numbers in v by int64 or uint64 where they are integers that
// fit, and float64 otherwise, so that msgpack carries them as numbers (integers in their
// shortest form). An integer that fits in neither, or a number beyond float64's range (which
// would become an infinity), is an error: a consumer would read another number than the one
// written.
func jsonNumbers(v any) (any, error) {
	switch x := v.(type) {
	case json.Number:
		s := x.String()
		if i, err := x.Int64(); err == nil {
			return i, nil
		}
		if u, err := strconv.ParseUint(s, 10, 64); err == nil {
			return u, nil
		}
		if !strings.ContainsAny(s, ".eE") {
			return nil, fmt.Errorf("integer %s does not fit in 64 bits", s)
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return nil, fmt.Errorf("number %s is beyond the range of a float64", s)
		}
		return f, nil
	case map[string]any:
		for k, e := range x {
			n, err := jsonNumbers(e)
			if err != nil {
				return nil, err
			}
			x[k] = n
		}
	case []any:
		for i, e := range x {
			n, err := jsonNumbers(e)
			if err != nil {
				return nil, err
			}
			x[i] = n
		}
	}
	return v, nil
}
