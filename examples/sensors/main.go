// Command sensors publishes sensor readings from one process and reads them in place in two
// others. A Reading holds no pointers, so the bus carries it with the Struct codec: the
// publisher fills a Reading that lives in shared memory (Loan, Send), and each subscriber
// looks at that same memory through a read-only *Reading (View). Nothing is encoded, decoded
// or copied on the way.
//
//	go run ./examples/sensors [-n readings-per-sensor] [-timeout d]
//
// The program runs as three processes: it re-executes itself as the publisher and as two
// subscribers, "all" (pattern sensors.*.reading: every sensor) and "line1" (one sensor), and
// prints what each subscriber saw. The bus lives in a temporary directory, removed at the end.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/codec"
	"github.com/offq/offq/examples/internal/launch"
)

// Reading is one sample of one sensor: fixed size, no pointers (the Struct codec refuses a
// type with a string, slice, map or pointer in it, naming the field).
type Reading struct {
	Seq      uint64   // 1, 2, ... per sensor
	Sensor   [16]byte // the sensor's name, NUL-padded
	Celsius  float64
	Humidity float64
	Stamp    int64 // Unix nanoseconds
	Status   uint32
}

var sensors = []string{"line1", "line2", "boiler", "yard"}

func main() {
	launch.Dispatch(child) // a child plays its role and exits here
	n := flag.Int("n", 20000, "readings per sensor")
	timeout := flag.Duration("timeout", time.Minute, "give up after this long")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	err := run(ctx, os.Stdout, *n)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sensors:", err)
		os.Exit(1)
	}
}

// child plays the role the parent started this process for.
func child(ctx context.Context) error {
	switch launch.Role() {
	case "publisher":
		return publish(ctx, launch.Arg())
	case "subscriber":
		return subscribe(ctx, launch.Arg())
	}
	return fmt.Errorf("unknown role %q", launch.Role())
}

// run is the parent: it creates the bus, starts the subscribers, waits until both are
// subscribed, starts the publisher and prints the subscribers' reports.
func run(ctx context.Context, w io.Writer, n int) error {
	dir, remove, err := launch.TempDir("offq-sensors-")
	if err != nil {
		return err
	}
	defer remove()
	b, err := bus.Open("sensors", bus.WithDir(dir)) // create the bus before the children attach
	if err != nil {
		return err
	}
	defer b.Close()

	var subs []*launch.Child
	for _, pattern := range []string{"sensors.*.reading", "sensors.line1.reading"} {
		want := n * len(sensors)
		if !strings.Contains(pattern, "*") {
			want = n
		}
		c, err := launch.Start(ctx, "subscriber "+pattern, "subscriber", pattern+" "+strconv.Itoa(want), dir)
		if err != nil {
			return err
		}
		if _, err := c.Expect(ctx, "ready"); err != nil {
			return err
		}
		subs = append(subs, c)
	}
	pub, err := launch.Start(ctx, "publisher", "publisher", strconv.Itoa(n), dir)
	if err != nil {
		return err
	}
	rate, err := pub.Expect(ctx, "published")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "publisher (pid %d): %s\n", pub.Pid(), rate)
	var errs []error
	for _, c := range subs {
		report, err := c.Expect(ctx, "report")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(w, "subscriber (pid %d) %s\n", c.Pid(), report)
		errs = append(errs, c.Wait(ctx))
	}
	errs = append(errs, pub.Wait(ctx))
	return errors.Join(errs...)
}

// publish writes n readings per sensor, each in place in a loaned buffer.
func publish(ctx context.Context, arg string) error {
	n, _ := strconv.Atoi(arg)
	b, err := bus.Open("sensors", bus.WithDir(launch.Dir()), bus.WithName("sensors-publisher"))
	if err != nil {
		return err
	}
	defer b.Close()
	c := codec.NewStruct[Reading]()
	pubs := make([]*bus.TypedPublisher[Reading], len(sensors))
	for i, s := range sensors {
		if pubs[i], err = bus.NewTypedPublisher(b, "sensors."+s+".reading", c); err != nil {
			return err
		}
	}
	start := time.Now()
	for seq := 1; seq <= n; seq++ {
		for i, p := range pubs {
			l, err := p.Loan() // a zeroed Reading in shared memory
			if err != nil {
				return err
			}
			r := l.Value()
			r.Seq = uint64(seq)
			copy(r.Sensor[:], sensors[i])
			r.Celsius = 20 + 5*math.Sin(float64(seq)/100+float64(i))
			r.Humidity = 0.5 + 0.1*math.Cos(float64(seq)/70)
			r.Stamp = time.Now().UnixNano()
			if err := p.Send(ctx, l); err != nil {
				return err
			}
		}
	}
	d := time.Since(start)
	launch.Say("published %d readings in %v (%.0f/s)", n*len(pubs), d.Round(time.Millisecond), float64(n*len(pubs))/d.Seconds())
	return nil
}

type stats struct {
	count    int
	last     uint64
	min, max float64
	sum      float64
}

// subscribe reads want readings matching pattern in place and reports per-sensor figures.
func subscribe(ctx context.Context, arg string) error {
	pattern, wantText, _ := strings.Cut(arg, " ")
	want, _ := strconv.Atoi(wantText)
	b, err := bus.Open("sensors", bus.WithDir(launch.Dir()), bus.WithName("sensors-subscriber"))
	if err != nil {
		return err
	}
	defer b.Close()
	// Block: the publisher waits for room rather than drop readings; a short queue keeps the
	// buffers in flight few.
	sub, err := bus.NewTypedSubscription(b, pattern, codec.NewStruct[Reading](), bus.WithOverflow(bus.Block), bus.WithQueueDepth(256))
	if err != nil {
		return err
	}
	launch.Say("ready")
	per := map[string]*stats{}
	var lag time.Duration
	received := 0
	for m, err := range sub.Messages(ctx) {
		if err != nil {
			return err
		}
		r, err := m.View() // the publisher's bytes, in place
		if err != nil {
			return err
		}
		name := strings.TrimRight(string(r.Sensor[:]), "\x00")
		s := per[name]
		if s == nil {
			s = &stats{min: math.Inf(1), max: math.Inf(-1)}
			per[name] = s
		}
		if r.Seq != s.last+1 {
			return fmt.Errorf("%s: reading %d after %d", name, r.Seq, s.last)
		}
		s.last, s.count, s.sum = r.Seq, s.count+1, s.sum+r.Celsius
		s.min, s.max = min(s.min, r.Celsius), max(s.max, r.Celsius)
		lag += time.Duration(time.Now().UnixNano() - r.Stamp)
		if received++; received == want {
			break
		}
	}
	if err := ctx.Err(); err != nil { // Messages ends quietly on cancel
		return err
	}
	var parts []string
	for _, name := range sensors {
		if s := per[name]; s != nil {
			parts = append(parts, fmt.Sprintf("%s %d in order, %.1f..%.1f °C, mean %.2f", name, s.count, s.min, s.max, s.sum/float64(s.count)))
		}
	}
	launch.Say("report %s: %d readings, mean age %v; %s", pattern, received, (lag / time.Duration(max(received, 1))).Round(time.Microsecond), strings.Join(parts, "; "))
	return nil
}
