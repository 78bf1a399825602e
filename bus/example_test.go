package bus_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/offq/offq/bus"
)

func Example() {
	dir, _ := os.MkdirTemp("", "offq-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()

	b, err := bus.Open("example", bus.WithDir(dir))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()

	sub, _ := b.Subscribe("sensors.*.temp")
	pub, _ := b.Publisher("sensors.line1.temp")

	// Zero copy: write the message straight into shared memory.
	l, _ := pub.Loan(5)
	copy(l.Bytes(), "21.5C")
	pub.Send(ctx, l)

	m, _ := sub.Receive(ctx)
	fmt.Printf("%s on %s (seq %d)\n", m.Data(), m.Topic(), m.Seq())
	m.Release()
	// Output: 21.5C on sensors.line1.temp (seq 1)
}

func ExamplePublisher_Publish() {
	dir, _ := os.MkdirTemp("", "offq-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	b, _ := bus.Open("example", bus.WithDir(dir))
	defer b.Close()

	sub, _ := b.Subscribe("orders.>", bus.WithQueueDepth(16))
	pub, _ := b.Publisher("orders.eu.new")
	for _, s := range []string{"a", "b", "c"} {
		pub.Publish(ctx, []byte(s)) // copies the bytes into a loaned buffer
	}
	for range 3 {
		m, _ := sub.Receive(ctx)
		fmt.Print(string(m.Data()), " ")
		m.Release()
	}
	fmt.Println()
	// Output: a b c
}

func ExampleSubscription_Messages() {
	dir, _ := os.MkdirTemp("", "offq-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	b, _ := bus.Open("example", bus.WithDir(dir))
	defer b.Close()

	sub, _ := b.Subscribe("ticks")
	pub, _ := b.Publisher("ticks")
	for i := range 3 {
		pub.Publish(ctx, []byte{byte('0' + i)})
	}
	n := 0
	for m, err := range sub.Messages(ctx) {
		if err != nil {
			break
		}
		fmt.Println(string(m.Data())) // released when the loop body returns
		if n++; n == 3 {
			break
		}
	}
	// Output:
	// 0
	// 1
	// 2
}

func ExampleWithHistory() {
	dir, _ := os.MkdirTemp("", "offq-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	b, _ := bus.Open("example", bus.WithDir(dir))
	defer b.Close()

	// The topic keeps its last two messages for subscribers that join later.
	pub, _ := b.Publisher("config.limits", bus.WithHistory(2))
	for _, v := range []string{"v1", "v2", "v3"} {
		pub.Publish(ctx, []byte(v))
	}
	late, _ := b.Subscribe("config.>")
	for range 2 {
		m, _ := late.Receive(ctx)
		fmt.Println(string(m.Data()))
		m.Release()
	}
	// Output:
	// v2
	// v3
}

func ExamplePublisher_SendBatch() {
	dir, _ := os.MkdirTemp("", "offq-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	b, _ := bus.Open("example", bus.WithDir(dir))
	defer b.Close()

	sub, _ := b.Subscribe("prices.>")
	pub, _ := b.Publisher("prices.eur")

	// Lend four buffers at once, write each in place, send them together.
	var loans [4]bus.Loan
	ls, _ := pub.LoanBatch(loans[:], 3)
	for i := range ls {
		copy(ls[i].Bytes(), fmt.Sprintf("p%02d", i))
	}
	pub.SendBatch(ctx, ls)

	// Receive what is queued (up to 16 at a time); each message is its own and is released
	// on its own or, as here, together.
	var buf [16]bus.Message
	ms, _ := sub.ReceiveBatch(ctx, buf[:])
	for _, m := range ms {
		fmt.Print(string(m.Data()), "#", m.Seq(), " ")
	}
	fmt.Println()
	bus.ReleaseBatch(ms)
	// Output: p00#1 p01#2 p02#3 p03#4
}

// A responder answers requests in place; the requester gets the reply in its own reply inbox.
func ExamplePublisher_Request() {
	dir, _ := os.MkdirTemp("", "offq-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	b, err := bus.Open("example", bus.WithDir(dir))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()

	svc, _ := b.Subscribe("svc.greet")
	svc.Handle(func(m bus.Message) {
		r, _ := m.ReplyLoan(len("hello, ") + len(m.Data())) // the reply, written in place
		n := copy(r.Bytes(), "hello, ")
		copy(r.Bytes()[n:], m.Data())
		r.Send(ctx)
	})
	defer svc.Close()

	pub, _ := b.Publisher("svc.greet")
	reply, err := pub.Request(ctx, []byte("world"))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s\n", reply.Data())
	reply.Release()

	nobody, _ := b.Publisher("svc.absent")
	_, err = nobody.Request(ctx, []byte("?"))
	fmt.Println(errors.Is(err, bus.ErrNoResponders))
	// Output:
	// hello, world
	// true
}

// A publisher with a slot ring: a subscriber of its topic reads each message from the slot it
// polls. Loan, Send, Receive and Release are as with any publisher.
func ExampleWithSlotRing() {
	dir, _ := os.MkdirTemp("", "offq-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()

	b, err := bus.Open("example", bus.WithDir(dir))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()

	sub, _ := b.Subscribe("robot.arm.pose", bus.WithQueueDepth(16))
	pub, err := b.Publisher("robot.arm.pose", bus.WithSlotRing(64, 48)) // 64 slots of up to 48 bytes
	if err != nil {
		fmt.Println(err)
		return
	}
	for i := range 3 {
		pose := fmt.Sprintf("pose %d", i)
		l, _ := pub.Loan(len(pose))
		copy(l.Bytes(), pose)
		pub.Send(ctx, l)
	}
	for range 3 {
		m, _ := sub.Receive(ctx)
		fmt.Printf("%s (seq %d)\n", m.Data(), m.Seq())
		m.Release()
	}
	_, err = pub.Loan(49)
	fmt.Println(errors.Is(err, bus.ErrTooLarge))
	// Output:
	// pose 0 (seq 1)
	// pose 1 (seq 2)
	// pose 2 (seq 3)
	// true
}
