// Command fanout sends 64 KiB frames from one process to several others without copying them.
// A Frame holds no pointers, so the bus carries it with the Struct codec: the publisher
// renders each frame straight into a loaned buffer in shared memory, and every subscriber
// checks the very same bytes in place. However many subscribers there are, a frame is written
// once and never copied.
//
//	go run ./examples/fanout [-frames n] [-subscribers k] [-timeout d]
//
// The program re-executes itself as the publisher and as k subscribers, and prints each
// subscriber's report: frames received in order, checksums verified, bytes read in place.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/codec"
	"github.com/offq/offq/examples/internal/launch"
)

// Frame is exactly 64 KiB, the size of one of the default configuration's size classes.
type Frame struct {
	Seq   uint64
	Stamp int64  // Unix nanoseconds
	Sum   uint32 // CRC-32 of Data[:Len]
	Len   uint32
	_     [8]byte
	Data  [64<<10 - 32]byte
}

func main() {
	launch.Dispatch(child) // a child plays its role and exits here
	frames := flag.Int("frames", 2000, "frames to send")
	subscribers := flag.Int("subscribers", 4, "subscriber processes")
	timeout := flag.Duration("timeout", time.Minute, "give up after this long")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	err := run(ctx, os.Stdout, *frames, *subscribers)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fanout:", err)
		os.Exit(1)
	}
}

func child(ctx context.Context) error {
	n, _ := strconv.Atoi(launch.Arg())
	switch launch.Role() {
	case "publisher":
		return publish(ctx, n)
	case "subscriber":
		return subscribe(ctx, n)
	}
	return fmt.Errorf("unknown role %q", launch.Role())
}

func run(ctx context.Context, w io.Writer, frames, subscribers int) error {
	dir, remove, err := launch.TempDir("offq-fanout-")
	if err != nil {
		return err
	}
	defer remove()
	b, err := bus.Open("fanout", bus.WithDir(dir))
	if err != nil {
		return err
	}
	defer b.Close()
	var subs []*launch.Child
	for i := range subscribers {
		c, err := launch.Start(ctx, fmt.Sprintf("subscriber %d", i+1), "subscriber", strconv.Itoa(frames), dir)
		if err != nil {
			return err
		}
		if _, err := c.Expect(ctx, "ready"); err != nil {
			return err
		}
		subs = append(subs, c)
	}
	pub, err := launch.Start(ctx, "publisher", "publisher", strconv.Itoa(frames), dir)
	if err != nil {
		return err
	}
	line, err := pub.Expect(ctx, "sent")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "publisher (pid %d): %s\n", pub.Pid(), line)
	errs := []error{pub.Wait(ctx)}
	for _, c := range subs {
		line, err := c.Expect(ctx, "report")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(w, "%s (pid %d): %s\n", c.Name, c.Pid(), line)
		errs = append(errs, c.Wait(ctx))
	}
	return errors.Join(errs...)
}

func publish(ctx context.Context, frames int) error {
	b, err := bus.Open("fanout", bus.WithDir(launch.Dir()), bus.WithName("fanout-publisher"))
	if err != nil {
		return err
	}
	defer b.Close()
	pub, err := bus.NewTypedPublisher(b, "video.frames", codec.NewStruct[Frame]())
	if err != nil {
		return err
	}
	start := time.Now()
	for seq := 1; seq <= frames; seq++ {
		l, err := pub.Loan()
		if err != nil {
			return err
		}
		f := l.Value() // 64 KiB in shared memory: render into it
		f.Seq = uint64(seq)
		f.Len = uint32(len(f.Data) - seq%1000)
		for i := range f.Data[:f.Len] {
			f.Data[i] = byte(i*seq>>3) ^ byte(seq)
		}
		f.Sum = crc32.ChecksumIEEE(f.Data[:f.Len])
		f.Stamp = time.Now().UnixNano()
		if err := pub.Send(ctx, l); err != nil {
			return err
		}
	}
	d := time.Since(start)
	launch.Say("sent %d frames of 64 KiB in %v to %d subscribers, each written once", frames, d.Round(time.Millisecond), pub.FanOut())
	return nil
}

func subscribe(ctx context.Context, frames int) error {
	b, err := bus.Open("fanout", bus.WithDir(launch.Dir()), bus.WithName("fanout-subscriber"))
	if err != nil {
		return err
	}
	defer b.Close()
	// Block with a short queue: the publisher waits for the slowest subscriber, and at most a
	// few frames are in flight.
	sub, err := bus.NewTypedSubscription(b, "video.frames", codec.NewStruct[Frame](), bus.WithOverflow(bus.Block), bus.WithQueueDepth(8))
	if err != nil {
		return err
	}
	launch.Say("ready")
	var got int
	var bytes int64
	var lag time.Duration
	var start time.Time
	for m, err := range sub.Messages(ctx) {
		if err != nil {
			return err
		}
		f, err := m.View()
		if err != nil {
			return err
		}
		if got == 0 {
			start = time.Now()
		}
		if f.Seq != uint64(got+1) {
			return fmt.Errorf("frame %d after %d", f.Seq, got)
		}
		if int(f.Len) > len(f.Data) || crc32.ChecksumIEEE(f.Data[:f.Len]) != f.Sum {
			return fmt.Errorf("frame %d: bad checksum", f.Seq)
		}
		lag += time.Duration(time.Now().UnixNano() - f.Stamp)
		bytes += int64(f.Len)
		if got++; got == frames {
			break
		}
	}
	if err := ctx.Err(); err != nil { // Messages ends quietly on cancel
		return err
	}
	d := time.Since(start)
	launch.Say("report %d frames in order, every checksum right, %.1f MiB read in place (%.0f MB/s), mean age %v",
		got, float64(bytes)/(1<<20), float64(bytes)/d.Seconds()/1e6,
		(lag / time.Duration(max(got, 1))).Round(time.Microsecond))
	return nil
}
