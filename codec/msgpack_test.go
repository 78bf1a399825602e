package codec

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

type mpInner struct {
	Label string
	Vals  []float64
}

type mpAll struct {
	ID     uint64            `msgpack:"id"`
	Name   string            `msgpack:"name"`
	Neg    int8              `msgpack:"neg"`
	F32    float32           `msgpack:"f32"`
	Blob   []byte            `msgpack:"blob"`
	Inner  mpInner           `msgpack:"inner"`
	Ptr    *mpInner          `msgpack:"ptr"`
	ByInt  map[int]string    `msgpack:"by_int"`
	Any    any               `msgpack:"any"`
	At     time.Time         `msgpack:"at"`
	Arr    [3]uint16         `msgpack:"arr"`
	Labels map[string]string `msgpack:"labels"`
}

func sampleAll(n int) mpAll {
	return mpAll{
		ID: uint64(n), Name: fmt.Sprintf("item-%d", n), Neg: -5, F32: 1.25,
		Blob:  bytes.Repeat([]byte{byte(n)}, n),
		Inner: mpInner{Label: "in", Vals: []float64{1, math.Pi}},
		Ptr:   &mpInner{Label: "ptr"},
		ByInt: map[int]string{1: "one", -2: "minus two"},
		Any:   map[string]any{"k": []any{int8(1), "two", nil}},
		At:    time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC),
		Arr:   [3]uint16{1, 2, 65535},
	}
}

func TestMsgpackRoundTrip(t *testing.T) {
	c := NewMsgpack[mpAll]()
	for _, n := range []int{0, 10, 5000} {
		in := sampleAll(n)
		dst := make([]byte, 8192)
		m, err := c.Encode(dst, &in)
		if err != nil {
			t.Fatal(err)
		}
		// The bytes are the library's own encoding (map order aside: compare decoded).
		var viaLib mpAll
		if err := msgpack.Unmarshal(dst[:m], &viaLib); err != nil {
			t.Fatal(err)
		}
		var out mpAll
		if err := c.Decode(dst[:m], &out); err != nil {
			t.Fatal(err)
		}
		for _, got := range []mpAll{out, viaLib} {
			if !got.At.Equal(in.At) {
				t.Fatalf("time %v, want %v", got.At, in.At)
			}
			got.At = in.At
			if got.Any == nil {
				t.Fatal("Any lost")
			}
			got.Any, in.Any = nil, nil
			if len(got.Blob) == 0 && len(in.Blob) == 0 {
				got.Blob = in.Blob
			}
			if !reflect.DeepEqual(got, in) {
				t.Fatalf("n=%d: got %+v\nwant %+v", n, got, in)
			}
			in = sampleAll(n)
		}
	}
}

func TestMsgpackShortBufferWritesOnlyInside(t *testing.T) {
	c := NewMsgpack[mpAll]()
	in := sampleAll(40)
	full := make([]byte, 4096)
	size, err := c.Encode(full, &in)
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, size+64)
	for n := range size {
		for i := range big {
			big[i] = 0xAA
		}
		if _, err := c.Encode(big[:n], &in); err != ErrShortBuffer {
			t.Fatalf("Encode into %d of %d bytes: %v, want ErrShortBuffer", n, size, err)
		}
		for i := n; i < len(big); i++ {
			if big[i] != 0xAA {
				t.Fatalf("Encode into %d bytes wrote byte %d", n, i)
			}
		}
	}
	if m, err := c.Encode(big[:size], &in); err != nil || m != size {
		t.Fatalf("Encode into exactly %d bytes: %d, %v", size, m, err)
	}
}

func TestMsgpackRejectsHostileBytes(t *testing.T) {
	type withSlice struct{ S []int64 }
	deep := append(bytes.Repeat([]byte{0x91}, 100000), 0xc0)
	for name, b := range map[string][]byte{
		"empty":               {},
		"truncated str":       {0xa5, 'a', 'b'},
		"array32 of 2^32-1":   {0xdd, 0xff, 0xff, 0xff, 0xff, 0x01},
		"map32 of 2^31":       {0x81, 0xa1, 'S', 0xdf, 0x80, 0, 0, 0},
		"slice claims 2^31":   {0x81, 0xa1, 'S', 0xdd, 0x80, 0, 0, 0, 1, 2},
		"bin32 of 4 GiB":      {0x81, 0xa1, 'S', 0xc6, 0xff, 0xff, 0xff, 0xff},
		"never-used code":     {0xc1},
		"trailing bytes":      {0x80, 0x00},
		"100000 nested":       deep,
		"ext32 past the end":  {0xc9, 0, 0, 0, 9, 1},
		"wrong type for S":    {0x81, 0xa1, 'S', 0xa3, 'a', 'b', 'c'},
		"truncated in a map":  {0x82, 0xa1, 'S', 0x90},
		"float64 cut short":   {0xcb, 0, 0, 0},
		"str16 length only":   {0xda, 0x00},
		"fixmap missing keys": {0x8f},
	} {
		var v withSlice
		err := NewMsgpack[withSlice]().Decode(b, &v)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
		var a any
		if err := NewMsgpack[any]().Decode(b, &a); !errors.Is(err, ErrMalformed) && name != "wrong type for S" {
			t.Errorf("%s into any: %v, want ErrMalformed", name, err)
		}
	}
}

func TestMsgpackDecodeResetsValue(t *testing.T) {
	c := NewMsgpack[mpAll]()
	dst := make([]byte, 4096)
	small := mpAll{ID: 2}
	n, _ := c.Encode(dst, &small)
	v := sampleAll(3)
	if err := c.Decode(dst[:n], &v); err != nil {
		t.Fatal(err)
	}
	if v.Name != "" || v.ByInt != nil || v.Ptr != nil || v.ID != 2 {
		t.Fatalf("fields of the previous value survived: %+v", v)
	}
}

func TestMsgpackEncodeError(t *testing.T) {
	type bad struct{ C chan int }
	_, err := NewMsgpack[bad]().Encode(make([]byte, 64), &bad{C: make(chan int)})
	if err == nil || errors.Is(err, ErrShortBuffer) {
		t.Fatalf("Encode of a chan: %v", err)
	}
}

func TestMsgpackZeroValueAndName(t *testing.T) {
	var z Msgpack[mpAll]
	fp, err := z.Fingerprint()
	want, _ := NewMsgpack[mpAll]().Fingerprint()
	if err != nil || fp != want || fp == 0 {
		t.Fatalf("zero value fingerprint %#x, %v; want %#x", fp, err, want)
	}
	if z.Name() != "msgpack" || z.SizeHint(nil) != 0 {
		t.Fatal(z.Name(), z.SizeHint(nil))
	}
}

// The pooled encoders and decoders are safe for concurrent use (run with -race).
func TestMsgpackConcurrent(t *testing.T) {
	c := NewMsgpack[mpAll]()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			dst := make([]byte, 8192)
			for i := range 200 {
				in := sampleAll(g*1000 + i%50)
				n, err := c.Encode(dst, &in)
				if err != nil {
					t.Error(err)
					return
				}
				var out mpAll
				if err := c.Decode(dst[:n], &out); err != nil || out.ID != in.ID || out.Name != in.Name {
					t.Errorf("round trip %d: %v", in.ID, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// Encoding a struct of numbers, strings, byte slices and arrays writes into the buffer and
// allocates nothing; what the library allocates elsewhere is measured in docs/codec.md.
func TestMsgpackEncodeFlatAllocatesNothing(t *testing.T) {
	type flatMsg struct {
		Seq   uint64
		Temp  float64
		Name  string
		Blob  []byte
		Arr   [8]float32
		Inner struct{ A, B int32 }
	}
	c := NewMsgpack[flatMsg]()
	v := flatMsg{Seq: 1, Name: "sensor", Blob: make([]byte, 100)}
	dst := make([]byte, 1024)
	if n := testing.AllocsPerRun(1000, func() { c.Encode(dst, &v) }); n != 0 {
		t.Fatalf("Encode: %v allocations", n)
	}
	n, _ := c.Encode(dst, &v)
	out := flatMsg{}
	if n := testing.AllocsPerRun(1000, func() { c.Decode(dst[:n], &out) }); n != 2 {
		t.Errorf("Decode: %v allocations, want 2 (the string and the byte slice)", n)
	}
	if err := validateMsgpack(dst[:n]); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(1000, func() { validateMsgpack(dst[:n]) }); n != 0 {
		t.Errorf("validate: %v allocations", n)
	}
}
