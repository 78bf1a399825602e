// Command latest-value shows a late joiner getting a topic's current value at once. Each
// publisher keeps its topic's last message (WithHistory(1)): a subscriber that starts after
// the publisher has gone still receives the latest Status of every matching topic first, in
// place, and then whatever is published next.
//
//	go run ./examples/latest-value [-updates n] [-timeout d]
//
// The program re-executes itself: a publisher process sends n status updates for two pumps and
// exits; then a late subscriber process starts, prints the latest status of each pump, and
// waits for one more update, which a second publisher process sends.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/codec"
	"github.com/offq/offq/examples/internal/launch"
)

// Status is a pump's state: pointer-free, carried in place by the Struct codec.
type Status struct {
	Seq      uint64
	Running  bool
	RPM      uint32
	Pressure float64 // bar
	Stamp    int64   // Unix nanoseconds
}

var pumps = []string{"plant.pump1.status", "plant.pump2.status"}

func main() {
	launch.Dispatch(child) // a child plays its role and exits here
	updates := flag.Int("updates", 1000, "updates per pump from the first publisher")
	timeout := flag.Duration("timeout", time.Minute, "give up after this long")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	err := run(ctx, os.Stdout, *updates)
	if err != nil {
		fmt.Fprintln(os.Stderr, "latest-value:", err)
		os.Exit(1)
	}
}

func child(ctx context.Context) error {
	switch launch.Role() {
	case "publisher":
		return publish(ctx, launch.Arg())
	case "late":
		return late(ctx)
	}
	return fmt.Errorf("unknown role %q", launch.Role())
}

func run(ctx context.Context, w io.Writer, updates int) error {
	dir, remove, err := launch.TempDir("offq-latest-")
	if err != nil {
		return err
	}
	defer remove()
	// This process keeps the bus, and so the topics' history, while publishers come and go.
	b, err := bus.Open("latest", bus.WithDir(dir))
	if err != nil {
		return err
	}
	defer b.Close()

	first, err := launch.Start(ctx, "publisher", "publisher", "1-"+strconv.Itoa(updates), dir)
	if err != nil {
		return err
	}
	line, err := first.Expect(ctx, "published")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "publisher (pid %d) published %s and exited\n", first.Pid(), line)
	if err := first.Wait(ctx); err != nil {
		return err
	}

	sub, err := launch.Start(ctx, "late subscriber", "late", "", dir)
	if err != nil {
		return err
	}
	for range pumps {
		line, err := sub.Expect(ctx, "latest")
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "late subscriber (pid %d) joined and got at once: %s\n", sub.Pid(), line)
	}
	if _, err := sub.Expect(ctx, "waiting"); err != nil {
		return err
	}
	second, err := launch.Start(ctx, "second publisher", "publisher", strconv.Itoa(updates+1)+"-"+strconv.Itoa(updates+1), dir)
	if err != nil {
		return err
	}
	line, err = sub.Expect(ctx, "live")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "late subscriber then received live: %s\n", line)
	return errors.Join(second.Wait(ctx), sub.Wait(ctx))
}

// publish sends the updates numbered from-to ("1-1000") on every pump's topic.
func publish(ctx context.Context, span string) error {
	var from, to int
	if _, err := fmt.Sscanf(span, "%d-%d", &from, &to); err != nil {
		return fmt.Errorf("span %q: %w", span, err)
	}
	b, err := bus.Open("latest", bus.WithDir(launch.Dir()), bus.WithName("latest-publisher"))
	if err != nil {
		return err
	}
	defer b.Close()
	c := codec.NewStruct[Status]()
	pubs := make([]*bus.TypedPublisher[Status], len(pumps))
	for i, topic := range pumps {
		// WithHistory takes effect when the topic is first used; later publishers share it.
		if pubs[i], err = bus.NewTypedPublisher(b, topic, c, bus.WithHistory(1)); err != nil {
			return err
		}
	}
	for seq := from; seq <= to; seq++ {
		for i, pub := range pubs {
			l, err := pub.Loan()
			if err != nil {
				return err
			}
			*l.Value() = Status{Seq: uint64(seq), Running: seq%7 != 0, RPM: uint32(1400 + 10*i + seq%50), Pressure: 2 + float64(seq%10)/10, Stamp: time.Now().UnixNano()}
			if err := pub.Send(ctx, l); err != nil {
				return err
			}
		}
	}
	launch.Say("published updates %d to %d on %d topics", from, to, len(pumps))
	return nil
}

// late subscribes after the first publisher has gone: the history delivers each pump's latest
// status first, then live updates follow.
func late(ctx context.Context) error {
	b, err := bus.Open("latest", bus.WithDir(launch.Dir()), bus.WithName("latest-subscriber"))
	if err != nil {
		return err
	}
	defer b.Close()
	sub, err := bus.NewTypedSubscription(b, "plant.*.status", codec.NewStruct[Status]())
	if err != nil {
		return err
	}
	show := func(m bus.TypedMessage[Status]) (string, error) {
		s, err := m.View()
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%s #%d running=%t rpm=%d pressure=%.1f bar, %v old", m.Topic(), s.Seq, s.Running, s.RPM, s.Pressure,
			time.Duration(time.Now().UnixNano()-s.Stamp).Round(time.Microsecond)), nil
	}
	for range pumps {
		m, err := sub.Receive(ctx)
		if err != nil {
			return err
		}
		line, err := show(m)
		m.Release()
		if err != nil {
			return err
		}
		launch.Say("latest %s", line)
	}
	if sub.Len() != 0 {
		return fmt.Errorf("%d more messages queued: history should hold only the latest", sub.Len())
	}
	launch.Say("waiting")
	m, err := sub.Receive(ctx)
	if err != nil {
		return err
	}
	defer m.Release()
	line, err := show(m)
	if err != nil {
		return err
	}
	launch.Say("live %s", line)
	return nil
}
