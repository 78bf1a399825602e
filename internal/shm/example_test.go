package shm_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/offq/offq/internal/shm"
)

// A publisher and a subscriber share one region, through the door's whole operations: Loan
// lends a buffer, Topic.Send delivers it (header, a reference per inbox as its cell commits,
// history, end of the loan), Take moves it from the inbox into the subscriber's held list,
// and Release ends that record. Here both are in one process; across processes the code is
// the same, each process opening the region by name.
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

	// The subscriber opens an inbox; a publisher lists the inboxes its topic fans out to.
	in, err := sub.OpenInbox(shm.InboxConfig{Capacity: 16, Pattern: "greetings"})
	if err != nil {
		log.Fatal(err)
	}
	defer sub.CloseInbox(&in)
	t, err := pub.LookupTopic("greetings", true, 0)
	if err != nil {
		log.Fatal(err)
	}
	to, err := r.Targets(nil, func(pattern string) bool { return pattern == "greetings" })
	if err != nil {
		log.Fatal(err)
	}

	// Publish: loan a buffer, write in place, send.
	ctx := context.Background()
	msg := "hello, shared memory"
	l, err := pub.Loan(len(msg))
	if err != nil {
		log.Fatal(err)
	}
	if err := l.Write([]byte(msg)); err != nil {
		log.Fatal(err)
	}
	if _, err := t.Send(ctx, l, len(msg), to); err != nil {
		log.Fatal(err)
	}

	// Receive: the handle is checked before use; the data aliases the shared buffer.
	m, err := sub.Take(ctx, &in, shm.Waiter{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s (seq %d, %d-byte buffer)\n", m.Data(), m.Meta().Seq, m.Cap())
	if err := m.Release(); err != nil {
		log.Fatal(err)
	}
	fmt.Println("released twice:", m.Release())
	n, err := r.Allocated()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("buffers in use:", n[0])
	// Output:
	// hello, shared memory (seq 1, 256-byte buffer)
	// released twice: message already released
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
	// invalid configuration: inbox_capacity 1000; want a power of two from 2 to 1048576
}
