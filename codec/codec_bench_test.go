package codec

import (
	"fmt"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// Message shapes for the benchmarks. All three are pointer-free, so that every codec can
// carry them; "event" is a msgpack-only shape with strings, a slice and a map.
type (
	benchSmall struct { // 56 bytes
		Seq    uint64
		Stamp  int64
		Temp   float64
		Hum    float64
		Sensor [16]byte
		Flags  uint32
		Ok     bool
	}
	benchMedium struct { // 1 KiB + 8
		Seq     uint64
		Samples [128]float64
	}
	benchLarge struct { // 64 KiB + 8
		Seq     uint64
		Samples [8192]float64
	}
	benchEvent struct {
		Seq   uint64            `msgpack:"seq"`
		Name  string            `msgpack:"name"`
		Tags  []string          `msgpack:"tags"`
		Attrs map[string]string `msgpack:"attrs"`
		Temp  float64           `msgpack:"temp"`
	}
)

func newSmall() *benchSmall {
	return &benchSmall{Seq: 1, Stamp: 1700000000, Temp: 21.5, Hum: 0.4, Sensor: [16]byte{'t'}, Ok: true}
}

func newMedium() *benchMedium {
	v := &benchMedium{Seq: 1}
	for i := range v.Samples {
		v.Samples[i] = float64(i) * 1.5
	}
	return v
}

func newLarge() *benchLarge {
	v := &benchLarge{Seq: 1}
	for i := range v.Samples {
		v.Samples[i] = float64(i) * 1.5
	}
	return v
}

func newEvent() *benchEvent {
	return &benchEvent{Seq: 1, Name: "line1.temp", Tags: []string{"plant", "line1"}, Attrs: map[string]string{"unit": "C"}, Temp: 21.5}
}

// dstBuf stands for a loaned buffer: 1 MiB, aligned at least as a payload is (32 bytes).
func dstBuf() []byte { return alignedBuf(1 << 20) }

// BenchmarkEncode compares writing a message into a (loaned) buffer: msgpack encoding in
// place, msgpack.Marshal followed by a copy into the buffer, and the Struct codec's plain copy.
func BenchmarkEncode(b *testing.B) {
	benchEncode(b, "small", newSmall(), true)
	benchEncode(b, "medium", newMedium(), true)
	benchEncode(b, "large", newLarge(), true)
	benchEncode(b, "event", newEvent(), false)
}

func benchEncode[T any](b *testing.B, shape string, v *T, flat bool) {
	dst := dstBuf()
	mp := NewMsgpack[T]()
	n, err := mp.Encode(dst, v)
	if err != nil {
		b.Fatal(err)
	}
	b.Run(fmt.Sprintf("shape=%s/msgpack-inplace", shape), func(b *testing.B) {
		b.SetBytes(int64(n))
		b.ReportAllocs()
		for range b.N {
			if _, err := mp.Encode(dst, v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run(fmt.Sprintf("shape=%s/msgpack-marshal+copy", shape), func(b *testing.B) {
		b.SetBytes(int64(n))
		b.ReportAllocs()
		for range b.N {
			enc, err := msgpack.Marshal(v)
			if err != nil {
				b.Fatal(err)
			}
			copyChunked(dst, enc)
		}
	})
	if !flat {
		return
	}
	st := NewStruct[T]()
	b.Run(fmt.Sprintf("shape=%s/struct-copy", shape), func(b *testing.B) {
		b.SetBytes(int64(st.Size()))
		b.ReportAllocs()
		for range b.N {
			if _, err := st.Encode(dst, v); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDecode compares reading a message out of a buffer: msgpack decoding in place
// (with its validation pass), msgpack.Unmarshal, the Struct codec's copy and its in-place
// view (which reads nothing until the program does; here it reads one field).
func BenchmarkDecode(b *testing.B) {
	benchDecode(b, "small", newSmall(), true)
	benchDecode(b, "medium", newMedium(), true)
	benchDecode(b, "large", newLarge(), true)
	benchDecode(b, "event", newEvent(), false)
}

func benchDecode[T any](b *testing.B, shape string, v *T, flat bool) {
	src := dstBuf()
	mp := NewMsgpack[T]()
	n, err := mp.Encode(src, v)
	if err != nil {
		b.Fatal(err)
	}
	src = src[:n]
	out := new(T)
	b.Run(fmt.Sprintf("shape=%s/msgpack-inplace", shape), func(b *testing.B) {
		b.SetBytes(int64(n))
		b.ReportAllocs()
		for range b.N {
			if err := mp.Decode(src, out); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run(fmt.Sprintf("shape=%s/msgpack-unmarshal", shape), func(b *testing.B) {
		b.SetBytes(int64(n))
		b.ReportAllocs()
		for range b.N {
			if err := msgpack.Unmarshal(src, out); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run(fmt.Sprintf("shape=%s/msgpack-validate-only", shape), func(b *testing.B) {
		b.SetBytes(int64(n))
		b.ReportAllocs()
		for range b.N {
			if err := validateMsgpack(src); err != nil {
				b.Fatal(err)
			}
		}
	})
	if !flat {
		return
	}
	st := NewStruct[T]()
	raw := alignedBuf(st.Size())
	st.Encode(raw, v)
	b.Run(fmt.Sprintf("shape=%s/struct-copy", shape), func(b *testing.B) {
		b.SetBytes(int64(st.Size()))
		b.ReportAllocs()
		for range b.N {
			if err := st.Decode(raw, out); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run(fmt.Sprintf("shape=%s/struct-view", shape), func(b *testing.B) {
		b.ReportAllocs()
		var sink *T
		for range b.N {
			p, err := st.View(raw)
			if err != nil {
				b.Fatal(err)
			}
			sink = p
		}
		_ = sink
	})
}
