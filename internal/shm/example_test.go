package shm_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/offq/offq/internal/shm"
)

// A publisher and a subscriber share one region. The publisher writes the message in place in
// a pooled buffer and pushes the buffer's handle into the subscriber's inbox; the subscriber
// reads the message where it lies and releases it. Here both are in one process; across
// processes the code is the same, each process opening the region by name.
func ExampleCreate() {
	dir, err := os.MkdirTemp("", "offq-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	cfg := shm.DefaultConfig()
	cfg.Classes = []shm.Class{{Size: 256, Count: 16}, {Size: 4 << 10, Count: 4}}
	r, err := shm.Create("example", shm.Options{Dir: dir, Config: cfg})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()

	pub, err := r.Attach("publisher")
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Detach()
	sub, err := r.Attach("subscriber")
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Detach()

	// The subscriber opens an inbox; publishers find it by its ID.
	in, err := sub.OpenInbox(shm.InboxConfig{Capacity: 16, Pattern: "greetings"})
	if err != nil {
		log.Fatal(err)
	}
	defer in.Close()
	out, err := r.Inbox(in.ID())
	if err != nil {
		log.Fatal(err)
	}

	// Publish: loan a buffer, write in place, give the inbox a reference, end the loan.
	ctx := context.Background()
	msg := "hello, shared memory"
	b, err := pub.Alloc(len(msg))
	if err != nil {
		log.Fatal(err)
	}
	n := copy(b.Bytes(), msg)
	b.SetMeta(shm.Meta{Len: uint32(n), Seq: 1})
	if err := r.AddRefs(b.Handle(), 1); err != nil {
		log.Fatal(err)
	}
	if err := out.Push(ctx, b.Handle()); err != nil {
		log.Fatal(err)
	}
	if err := pub.Unloan(b.Handle()); err != nil {
		log.Fatal(err)
	}

	// Receive: the handle is checked before use; the data aliases the shared buffer.
	h, err := in.Pop(ctx, shm.Waiter{})
	if err != nil {
		log.Fatal(err)
	}
	got, err := r.Buffer(h)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s (seq %d, %d-byte buffer)\n", got.Data(), got.Meta().Seq, got.Cap())
	if err := r.Release(h); err != nil {
		log.Fatal(err)
	}
	pools, err := r.PoolStats()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("buffers in use:", pools[0].InUse)
	// Output:
	// hello, shared memory (seq 1, 256-byte buffer)
	// buffers in use: 0
}

func ExampleParseConfig() {
	cfg, err := shm.ParseConfig([]byte(`
inboxes = 128
inbox_capacity = 4096

[[classes]]
size = "256B"
count = 4096

[[classes]]
size = "64KiB"
count = 64
`))
	if err != nil {
		log.Fatal(err)
	}
	for _, c := range cfg.Classes {
		fmt.Printf("%d x %v\n", c.Count, c.Size)
	}
	fmt.Println("inboxes:", cfg.Inboxes, "of", cfg.InboxCapacity)
	fmt.Println("participants (default):", cfg.Participants)

	_, err = shm.ParseConfig([]byte("inbox_capacity = 1000\n"))
	fmt.Println(err)
	// Output:
	// 4096 x 256B
	// 64 x 64KiB
	// inboxes: 128 of 4096
	// participants (default): 64
	// offq: invalid configuration: inbox_capacity 1000; want a power of two from 2 to 1048576
}
