// Command service runs a small request/reply service on the bus: server processes answer
// "square this number" requests from several client processes, zero copy both ways. A
// client loans a Request in shared memory, fills it in place and sends it (RequestLoan); a
// server reads it in place (View) and answers with a Reply it writes into a loaned buffer that
// lands in the client's own reply inbox (Respond): no broker, no topic lookup for the reply,
// no copy. The servers share the requests as a queue group, so each request is answered once.
//
//	go run ./examples/service [-servers n] [-clients k] [-requests m] [-timeout d]
//
// The program re-executes itself as n servers and k clients, and prints each client's report:
// requests answered (all checked), by which server, and the round trip's median.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/codec"
	"github.com/offq/offq/examples/internal/launch"
)

// Request is what a client asks: the square of N. It holds no pointers, so the Struct codec
// carries it in place.
type Request struct {
	N int64
}

// Reply is the answer, with the server that gave it.
type Reply struct {
	N, Square int64
	Server    int64 // the server's pid
}

const topic = "svc.square"

func main() {
	launch.Dispatch(child)
	servers := flag.Int("servers", 2, "server processes (a queue group)")
	clients := flag.Int("clients", 3, "client processes")
	requests := flag.Int("requests", 2000, "requests per client")
	timeout := flag.Duration("timeout", time.Minute, "give up after this long")
	flag.Parse()
	if *servers < 1 || *clients < 1 || *requests < 1 {
		fmt.Fprintln(os.Stderr, "service: -servers, -clients and -requests must be at least 1")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := run(ctx, os.Stdout, *servers, *clients, *requests); err != nil {
		fmt.Fprintln(os.Stderr, "service:", err)
		os.Exit(1)
	}
}

func child(ctx context.Context) error {
	n, _ := strconv.Atoi(launch.Arg())
	switch launch.Role() {
	case "server":
		return serve(ctx)
	case "client":
		return request(ctx, n)
	}
	return fmt.Errorf("unknown role %q", launch.Role())
}

func run(ctx context.Context, w io.Writer, servers, clients, requests int) error {
	dir, remove, err := launch.TempDir("offq-service-")
	if err != nil {
		return err
	}
	defer remove()
	b, err := bus.Open("service", bus.WithDir(dir))
	if err != nil {
		return err
	}
	defer b.Close()
	sctx, stopServers := context.WithCancel(ctx)
	defer stopServers()
	for i := range servers {
		c, err := launch.Start(sctx, fmt.Sprintf("server %d", i+1), "server", "", dir)
		if err != nil {
			return err
		}
		if _, err := c.Expect(ctx, "ready"); err != nil {
			return err
		}
	}
	var cs []*launch.Child
	for i := range clients {
		c, err := launch.Start(ctx, fmt.Sprintf("client %d", i+1), "client", strconv.Itoa(requests), dir)
		if err != nil {
			return err
		}
		cs = append(cs, c)
	}
	var errs []error
	for _, c := range cs {
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

// serve answers square requests until killed.
func serve(ctx context.Context) error {
	b, err := bus.Open("service", bus.WithDir(launch.Dir()), bus.WithName("square-server"))
	if err != nil {
		return err
	}
	defer b.Close()
	sub, err := bus.NewTypedSubscription(b, topic, codec.NewStruct[Request](), bus.WithQueueGroup("squarers"))
	if err != nil {
		return err
	}
	replies := codec.NewStruct[Reply]()
	pid := int64(os.Getpid())
	launch.Say("ready")
	for m, err := range sub.Messages(ctx) {
		if err != nil {
			return err
		}
		req, err := m.View() // the client's bytes, in place
		if err != nil {
			return err
		}
		if err := bus.Respond(ctx, m.Message, replies, &Reply{N: req.N, Square: req.N * req.N, Server: pid}); err != nil {
			return err
		}
	}
	return nil
}

// request sends n requests, checks every reply and reports.
func request(ctx context.Context, n int) error {
	b, err := bus.Open("service", bus.WithDir(launch.Dir()), bus.WithName("square-client"))
	if err != nil {
		return err
	}
	defer b.Close()
	pub, err := bus.NewTypedPublisher(b, topic, codec.NewStruct[Request]())
	if err != nil {
		return err
	}
	replies := codec.NewStruct[Reply]()
	by := map[int64]int{}
	rtts := make([]time.Duration, 0, n)
	for i := range n {
		l, err := pub.Loan()
		if err != nil {
			return err
		}
		l.Value().N = int64(i)
		start := time.Now()
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		m, err := pub.RequestLoan(rctx, l)
		cancel()
		if err != nil {
			return fmt.Errorf("request %d: %w", i, err)
		}
		rtts = append(rtts, time.Since(start))
		var r Reply
		err = bus.DecodeReply(m, replies, &r)
		m.Release()
		if err != nil {
			return err
		}
		if r.N != int64(i) || r.Square != int64(i)*int64(i) {
			return fmt.Errorf("request %d answered %+v", i, r)
		}
		by[r.Server]++
	}
	slices.Sort(rtts)
	var parts []string
	for pid, k := range by {
		parts = append(parts, fmt.Sprintf("server pid %d: %d", pid, k))
	}
	sort.Strings(parts)
	launch.Say("report %d requests answered and checked (%s), median round trip %v", n, strings.Join(parts, ", "),
		rtts[len(rtts)/2].Round(100*time.Nanosecond))
	return nil
}
