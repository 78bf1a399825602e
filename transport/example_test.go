package transport_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/transport"
)

// A tool reads a bus's counters without attaching to it, and reaps what dead processes left.
func Example() {
	dir, _ := os.MkdirTemp("", "offq-example-")
	defer os.RemoveAll(dir)

	// An application's bus, with one message queued for a subscriber.
	b, _ := bus.Open("plant", bus.WithDir(dir))
	sub, _ := b.Subscribe("sensors.>")
	pub, _ := b.Publisher("sensors.temp")
	pub.Publish(context.Background(), []byte("21.5"))

	// The tool: a read-only mapping, so nothing it does can change the bus.
	r, err := transport.Open("plant", transport.Options{Dir: dir, ReadOnly: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()
	st, _ := r.Stats()
	fmt.Println("classes:", len(st.Config.Classes), "topics:", len(st.Topics), "queued:", st.Inboxes[0].Depth)
	if _, err := r.Reap(); err != nil {
		fmt.Println("reap:", errors.Is(err, transport.ErrPermission))
	}
	sub.Close()
	b.Close()

	_, err = transport.Open("nobody", transport.Options{Dir: dir})
	fmt.Println(errors.Is(err, transport.ErrNotFound), err)
	// Output:
	// classes: 4 topics: 1 queued: 1
	// reap: true
	// true open "nobody": region not found
}
