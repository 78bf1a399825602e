package bus

import (
	"context"
	"fmt"
	"testing"

	"github.com/offq/offq/codec"
)

// Pointer-free message shapes, so that both Struct and Msgpack carry them.
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
)

// BenchmarkTypedPublishReceive is one typed message end to end in one goroutine: publish
// (encode into the loaned buffer), receive, read the value, release. Sub-benchmarks by shape
// and path:
//
//   - struct-loan+view: Loan a *T in the buffer, set one field, Send; View it in place.
//   - struct-publish+decode: Publish a T (one copy in), Decode it (one copy out).
//   - msgpack: Publish (encode in place), Decode (validate, decode in place).
//   - msgpack-heap+copy: encode into a private heap buffer, then Publisher.Publish copies it
//     into the loaned buffer; Decode as above. What an encoder without in-place writing costs.
func BenchmarkTypedPublishReceive(b *testing.B) {
	benchTyped(b, "small", &benchSmall{Seq: 1, Temp: 21.5, Sensor: [16]byte{'t'}}, func(v *benchSmall) uint64 { return v.Seq })
	benchTyped(b, "medium", &benchMedium{Seq: 1}, func(v *benchMedium) uint64 { return v.Seq })
	benchTyped(b, "large", &benchLarge{Seq: 1}, func(v *benchLarge) uint64 { return v.Seq })
}

func benchTyped[T any](b *testing.B, shape string, v *T, seq func(*T) uint64) {
	run := func(path string, body func(b *testing.B, bs *Bus)) {
		b.Run(fmt.Sprintf("shape=%s/%s", shape, path), func(b *testing.B) {
			bs, err := Open("bench", WithDir(b.TempDir()), WithConfig(benchConfig()))
			if err != nil {
				b.Fatal(err)
			}
			defer bs.Close()
			b.ReportAllocs()
			body(b, bs)
		})
	}
	ctx := context.Background()
	run("struct-loan+view", func(b *testing.B, bs *Bus) {
		c := codec.NewStruct[T]()
		sub, _ := NewTypedSubscription(bs, "b", c, WithQueueDepth(64))
		pub, _ := NewTypedPublisher(bs, "b", c)
		for range b.N {
			l, err := pub.Loan()
			if err != nil {
				b.Fatal(err)
			}
			*l.Value() = *v
			pub.Send(ctx, l)
			m, _ := sub.Receive(ctx)
			p, err := m.View()
			if err != nil || seq(p) != 1 {
				b.Fatal(err)
			}
			m.Release()
		}
	})
	run("struct-publish+decode", func(b *testing.B, bs *Bus) {
		c := codec.NewStruct[T]()
		sub, _ := NewTypedSubscription(bs, "b", c, WithQueueDepth(64))
		pub, _ := NewTypedPublisher(bs, "b", c)
		out := new(T)
		for range b.N {
			if err := pub.Publish(ctx, v); err != nil {
				b.Fatal(err)
			}
			m, _ := sub.Receive(ctx)
			if err := m.Decode(out); err != nil || seq(out) != 1 {
				b.Fatal(err)
			}
			m.Release()
		}
	})
	run("msgpack", func(b *testing.B, bs *Bus) {
		c := codec.NewMsgpack[T]()
		sub, _ := NewTypedSubscription(bs, "b", c, WithQueueDepth(64))
		pub, _ := NewTypedPublisher(bs, "b", c)
		out := new(T)
		for range b.N {
			if err := pub.Publish(ctx, v); err != nil {
				b.Fatal(err)
			}
			m, _ := sub.Receive(ctx)
			if err := m.Decode(out); err != nil || seq(out) != 1 {
				b.Fatal(err)
			}
			m.Release()
		}
	})
	run("msgpack-heap+copy", func(b *testing.B, bs *Bus) {
		c := codec.NewMsgpack[T]()
		sub, _ := NewTypedSubscription(bs, "b", c, WithQueueDepth(64))
		pub, _ := bs.Publisher("b")
		heap := make([]byte, 1<<20)
		out := new(T)
		for range b.N {
			n, err := c.Encode(heap, v)
			if err != nil {
				b.Fatal(err)
			}
			if err := pub.Publish(ctx, heap[:n]); err != nil {
				b.Fatal(err)
			}
			m, _ := sub.Receive(ctx)
			if err := m.Decode(out); err != nil || seq(out) != 1 {
				b.Fatal(err)
			}
			m.Release()
		}
	})
}
