package topics

import (
	"strings"
	"testing"
)

var sink bool

func BenchmarkMatch(b *testing.B) {
	long := strings.Repeat("token.", 15) + "last" // 94 bytes, 16 tokens
	benchmarks := []struct {
		name, pattern, topic string
	}{
		{"literal/short", "a.b", "a.b"},
		{"literal/long", long, long},
		{"literal/long-miss", long[:len(long)-1] + "x", long},
		{"star/short", "a.*.c", "a.b.c"},
		{"star/long", strings.Repeat("*.", 15) + "last", long},
		{"gt/short", "a.>", "a.b.c"},
		{"gt/long", "token.*.>", long},
	}
	for _, bm := range benchmarks {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sink = Match(bm.pattern, bm.topic)
			}
		})
	}
}

func BenchmarkValidateName(b *testing.B) {
	for _, bm := range []struct{ name, topic string }{
		{"short", "a.b"},
		{"long", strings.Repeat("token.", 15) + "last"},
		{"unicode", strings.Repeat("名前.", 15) + "last"},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sink = ValidateName(bm.topic) == nil
			}
		})
	}
}

func BenchmarkHash(b *testing.B) {
	name := "orders.eu.fr.created"
	b.ReportAllocs()
	var h uint64
	for b.Loop() {
		h += Hash(name)
	}
	_ = h
}
