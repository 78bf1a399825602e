package bus

import (
	"context"
	"testing"
)

// BenchmarkMessageTopic: Message.Topic on a received message (the name cached per topic
// index, checked against the entry's generation).
func BenchmarkMessageTopic(b *testing.B) {
	bus, err := Open("bench", WithDir(b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	defer bus.Close()
	ctx := context.Background()
	s, err := bus.Subscribe("bench.topic")
	if err != nil {
		b.Fatal(err)
	}
	pub, err := bus.Publisher("bench.topic")
	if err != nil {
		b.Fatal(err)
	}
	if err := pub.Publish(ctx, []byte("x")); err != nil {
		b.Fatal(err)
	}
	m, err := s.Receive(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Release()
	for b.Loop() {
		if m.Topic() != "bench.topic" {
			b.Fatal("wrong name")
		}
	}
}
