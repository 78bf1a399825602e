// Command services runs a service with hundreds of subscriptions on a handful of OS threads.
// The service process subscribes to one topic per device (devices.<n>.cmd, 500 by default)
// and serves each the way nats.go users write it, a goroutine per subscription blocked in
// Receive; a control goroutine waits on two more topics at once with bus.Select. A client
// process sends every device its commands, asks for the service's status now and then, and
// finally tells it to stop.
//
// A goroutine waiting in Receive or Select costs no OS thread: it parks, and one goroutine per
// process sleeps on the process's doorbell, which publishers ring when they deliver to a
// subscription that waits. The service prints its OS thread count (/proc/self/status) with
// every subscription idle and at the end.
//
//	go run ./examples/services [-subscriptions n] [-commands k] [-timeout d]
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/examples/internal/launch"
	"github.com/offq/offq/internal/procstat"
)

func main() {
	launch.Dispatch(child) // a child plays its role and exits here
	subscriptions := flag.Int("subscriptions", 500, "device topics the service subscribes to")
	commands := flag.Int("commands", 5, "commands per device")
	timeout := flag.Duration("timeout", time.Minute, "give up after this long")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := run(ctx, os.Stdout, *subscriptions, *commands); err != nil {
		fmt.Fprintln(os.Stderr, "services:", err)
		os.Exit(1)
	}
}

// config is the bus's configuration: room for every subscription's queue and for a message
// held by each of their goroutines.
func config(subscriptions int) bus.Config {
	c := bus.DefaultConfig()
	c.Classes = []bus.Class{{Size: 64, Count: uint32(8*subscriptions + 64)}}
	c.Inboxes = uint32(subscriptions + 8)
	c.Topics = uint32(subscriptions + 8)
	c.Held = uint32(subscriptions + 64)
	c.InboxCapacity = 8
	return c
}

// arg is a child's argument: subscriptions and commands per device.
func arg(subscriptions, commands int) string { return fmt.Sprintf("%d %d", subscriptions, commands) }

func child(ctx context.Context) error {
	var subscriptions, commands int
	if _, err := fmt.Sscanf(launch.Arg(), "%d %d", &subscriptions, &commands); err != nil {
		return err
	}
	switch launch.Role() {
	case "service":
		return serve(ctx, subscriptions, commands)
	case "client":
		return drive(ctx, subscriptions, commands)
	}
	return fmt.Errorf("unknown role %q", launch.Role())
}

func run(ctx context.Context, w io.Writer, subscriptions, commands int) error {
	dir, remove, err := launch.TempDir("offq-services-")
	if err != nil {
		return err
	}
	defer remove()
	b, err := bus.Open("services", bus.WithDir(dir), bus.WithConfig(config(subscriptions)))
	if err != nil {
		return err
	}
	defer b.Close()
	svc, err := launch.Start(ctx, "service", "service", arg(subscriptions, commands), dir)
	if err != nil {
		return err
	}
	line, err := svc.Expect(ctx, "ready")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "service (pid %d): ready%s\n", svc.Pid(), line)
	cl, err := launch.Start(ctx, "client", "client", arg(subscriptions, commands), dir)
	if err != nil {
		return err
	}
	line, err = cl.Expect(ctx, "sent: ")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "client (pid %d): sent %s\n", cl.Pid(), line)
	errs := []error{cl.Wait(ctx)}
	line, err = svc.Expect(ctx, "report: ")
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	fmt.Fprintf(w, "service (pid %d): %s\n", svc.Pid(), line)
	return errors.Join(append(errs, svc.Wait(ctx))...)
}

// device is the topic of device i's commands.
func device(i int) string { return "devices." + strconv.Itoa(i) + ".cmd" }

// serve is the service: a goroutine per device subscription, each expecting commands 1 to
// commands in order, and a control goroutine on svc.status and svc.stop.
func serve(ctx context.Context, subscriptions, commands int) error {
	b, err := bus.Open("services", bus.WithDir(launch.Dir()), bus.WithName("service"))
	if err != nil {
		return err
	}
	defer b.Close()
	subs := make([]*bus.Subscription, subscriptions)
	for i := range subs {
		// Block: a device that falls behind makes the client wait; no command is dropped.
		if subs[i], err = b.Subscribe(device(i), bus.WithOverflow(bus.Block)); err != nil {
			return err
		}
	}
	status, err := b.Subscribe("svc.status")
	if err != nil {
		return err
	}
	stop, err := b.Subscribe("svc.stop")
	if err != nil {
		return err
	}
	var handled atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, subscriptions+1)
	for i, s := range subs {
		wg.Add(1)
		go func() { // one goroutine per subscription, as with nats.go
			defer wg.Done()
			for want := uint64(1); want <= uint64(commands); want++ {
				m, err := s.Receive(ctx)
				if err != nil {
					errs <- err
					return
				}
				got := binary.LittleEndian.Uint64(m.Data())
				m.Release()
				if got != want {
					errs <- fmt.Errorf("device %d: command %d, want %d", i, got, want)
					return
				}
				handled.Add(1)
			}
		}()
	}
	statuses := 0
	control := make(chan error, 1)
	go func() { // one goroutine waits on both control topics
		for {
			m, err := bus.Select(ctx, status, stop)
			if err != nil {
				control <- err
				return
			}
			which := m.Subscription()
			m.Release()
			if which == stop {
				// Select takes from either in turn: status requests published before the
				// stop may still be queued.
				for status.Len() > 0 {
					m, err := status.Receive(ctx)
					if err != nil {
						control <- err
						return
					}
					m.Release()
					statuses++
				}
				control <- nil
				return
			}
			statuses++
		}
	}()
	// Every subscription idle, its goroutine parked in Receive: count the threads.
	for _, s := range append(subs, status, stop) {
		for {
			st, err := s.Stats()
			if err != nil {
				return err
			}
			if st.Sleeping {
				break
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			time.Sleep(time.Millisecond)
		}
	}
	idle, err := procstat.Threads()
	if err != nil {
		return err
	}
	launch.Say("ready: %d subscriptions, a goroutine each in Receive, and one in Select on 2 more: %d OS threads", subscriptions, idle)
	wg.Wait()
	if err := <-control; err != nil {
		return err
	}
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	end, err := procstat.Threads()
	if err != nil {
		return err
	}
	launch.Say("report: %d commands handled in order on %d subscriptions, %d status requests; OS threads: %d idle, %d at the end",
		handled.Load(), subscriptions, statuses, idle, end)
	return nil
}

// drive is the client: commands to every device, a status request after each round, then
// stop.
func drive(ctx context.Context, subscriptions, commands int) error {
	b, err := bus.Open("services", bus.WithDir(launch.Dir()), bus.WithName("client"))
	if err != nil {
		return err
	}
	defer b.Close()
	pubs := make([]*bus.Publisher, subscriptions)
	for i := range pubs {
		if pubs[i], err = b.Publisher(device(i)); err != nil {
			return err
		}
	}
	status, err := b.Publisher("svc.status")
	if err != nil {
		return err
	}
	stop, err := b.Publisher("svc.stop")
	if err != nil {
		return err
	}
	start := time.Now()
	var cmd [8]byte
	for n := 1; n <= commands; n++ {
		binary.LittleEndian.PutUint64(cmd[:], uint64(n))
		for _, p := range pubs {
			if err := p.Publish(ctx, cmd[:]); err != nil {
				return err
			}
		}
		if err := status.Publish(ctx, []byte("status?")); err != nil {
			return err
		}
	}
	if err := stop.Publish(ctx, []byte("stop")); err != nil {
		return err
	}
	launch.Say("sent: %d commands to %d devices in %v", commands*subscriptions, subscriptions, time.Since(start).Round(time.Millisecond))
	return nil
}
