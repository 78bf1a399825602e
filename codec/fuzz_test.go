//go:build unix

package codec

import (
	"bytes"
	"encoding/json"
	"errors"
	"sync"
	"syscall"
	"testing"
)

// guarded places data at the very end of readable memory: the page after it is PROT_NONE, so
// a read past the end of the slice faults instead of going unnoticed. (A read before the start
// is impossible without unsafe, and the codec package does not import it.)
type guarded struct {
	mu   sync.Mutex
	mem  []byte
	page int
}

const guardedMax = 1 << 20

var guard guarded

func (g *guarded) place(tb testing.TB, data []byte) []byte {
	if g.mem == nil {
		g.page = syscall.Getpagesize()
		mem, err := syscall.Mmap(-1, 0, guardedMax+g.page, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
		if err != nil {
			tb.Fatal(err)
		}
		if err := syscall.Mprotect(mem[guardedMax:], syscall.PROT_NONE); err != nil {
			tb.Fatal(err)
		}
		g.mem = mem // kept for the life of the process
	}
	if len(data) > guardedMax {
		data = data[:guardedMax]
	}
	b := g.mem[guardedMax-len(data) : guardedMax : guardedMax]
	copy(b, data)
	return b
}

func FuzzMsgpackDecode(f *testing.F) {
	for _, n := range []int{0, 3, 70} {
		v := sampleAll(n)
		b, err := marshalForSeed(&v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range [][]byte{
		{}, {0xc1}, {0xdd, 0xff, 0xff, 0xff, 0xff}, {0xdf, 0x7f, 0xff, 0xff, 0xff},
		{0x81, 0xa2, 'i', 'd', 0xcf, 1, 2, 3, 4, 5, 6, 7, 8},
		{0xc7, 12, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
		bytes.Repeat([]byte{0x91}, 2000),
		{0x81, 0x92, 0x90, 0x80, 0xc0},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		guard.mu.Lock()
		defer guard.mu.Unlock()
		b := guard.place(t, data)
		want := append([]byte(nil), b...)

		verr := validateMsgpack(b)
		var out bytes.Buffer
		jerr := MsgpackToJSON(&out, b)
		if (verr == nil) != (jerr == nil) {
			t.Fatalf("validate: %v, MsgpackToJSON: %v", verr, jerr)
		}
		if jerr != nil {
			if !errors.Is(jerr, ErrMalformed) || out.Len() != 0 {
				t.Fatalf("MsgpackToJSON: %v, wrote %d bytes", jerr, out.Len())
			}
		} else if !json.Valid(out.Bytes()) {
			t.Fatalf("MsgpackToJSON wrote invalid JSON: %s", out.String())
		}

		var all mpAll
		errAll := NewMsgpack[mpAll]().Decode(b, &all)
		var anyV any
		errAny := NewMsgpack[any]().Decode(b, &anyV)
		var ints []int64
		errInts := NewMsgpack[[]int64]().Decode(b, &ints)
		for _, err := range []error{errAll, errAny, errInts} {
			if err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatalf("Decode: %v does not wrap ErrMalformed", err)
			}
			if verr != nil && err == nil {
				t.Fatalf("Decode accepted what validation refused: %v", verr)
			}
		}
		if len(ints) > len(b) {
			t.Fatalf("%d-byte message decoded to %d integers", len(b), len(ints))
		}
		if !bytes.Equal(b, want) {
			t.Fatal("decoding wrote to the message")
		}
	})
}

func marshalForSeed(v *mpAll) ([]byte, error) {
	dst := make([]byte, 1<<16)
	n, err := NewMsgpack[mpAll]().Encode(dst, v)
	return dst[:n], err
}
