package bench

// The subscriptions pattern: one publisher (this process) to many subscriptions in one child
// process, a goroutine each waiting in Receive: the rate, and how many OS threads the child
// needs for it.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/internal/peer"
	"github.com/offq/offq/internal/procstat"
	"github.com/offq/offq/transport"
)

// subsDepth is each subscription's queue depth in the subscriptions pattern.
const subsDepth = 16

// subsTopic is the topic of subscription i.
func subsTopic(i int) string { return "bench.subs." + strconv.Itoa(i) }

// offqSubscriptions publishes round robin to c.Subs topics, each with one subscription in one
// child: message k of the run goes to topic (k-1) mod c.Subs, as that topic's message
// (k-1)/c.Subs + 1, so that each subscription sees its own consecutive sequence; the end
// marker goes to every topic.
func (bn *bencher) offqSubscriptions(ctx context.Context, c benchCase) (res benchResult, err error) {
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	name := "subs-" + strconv.Itoa(bn.seq)
	n := c.Subs
	cfg := transport.Config{
		Classes: []transport.Class{{Size: transport.Size(roundUp64(c.Size)), Count: uint32(n*subsDepth + 64)}},
		Inboxes: uint32(n + 1), InboxCapacity: subsDepth, Topics: uint32(n + 4), Participants: 4, Held: uint32(n + 16),
	}
	b, err := bn.openBenchBus(name, cfg)
	if err != nil {
		return res, err
	}
	defer transport.Unlink(bn.tmp, name)
	defer b.Close()
	pubs := make([]*bus.Publisher, n)
	for i := range pubs {
		if pubs[i], err = b.Publisher(subsTopic(i)); err != nil {
			return res, err
		}
	}
	p, err := bn.start("subs", fail, nil, peerArg{Role: "offq-subs", Bus: name, Mode: c.Mode, Depth: subsDepth, Size: n})
	if err != nil {
		return res, err
	}
	procs := []*benchProc{p}
	defer func() { stopAll(procs) }()
	if _, err := p.expect(ctx, benchReady); err != nil {
		return res, err
	}
	var stalls uint64
	sendTo := func(i int, seq, phase uint64) error {
		for {
			l, err := pubs[i].Loan(c.Size)
			if errors.Is(err, bus.ErrPoolExhausted) {
				if stalls++; stalls%1024 == 0 && ctx.Err() != nil {
					return ctx.Err()
				}
				runtime.Gosched()
				continue
			}
			if err != nil {
				return err
			}
			d := l.Bytes()
			binary.LittleEndian.PutUint64(d[0:], seq)
			binary.LittleEndian.PutUint64(d[8:], phase)
			return pubs[i].Send(ctx, l)
		}
	}
	send := func(seq, phase uint64) error {
		k := seq - 1
		if phase == phaseEnd {
			for i := range n {
				// The end marker follows each topic's last message, whichever that was.
				if err := sendTo(i, (k+uint64(n)-1-uint64(i))/uint64(n)+1, phaseEnd); err != nil {
					return err
				}
			}
			return nil
		}
		return sendTo(int(k%uint64(n)), k/uint64(n)+1, phase)
	}
	if err := onCPU(bn.cpus[0], func() error { return bn.publish(send) }); err != nil {
		return res, caseError(ctx, err)
	}
	l, err := p.expect(ctx, benchCounts)
	if err != nil {
		return res, err
	}
	if err := stopAll(procs); err != nil {
		return res, err
	}
	res = resultOf(c)
	if l.Count == 0 || l.End <= l.First {
		return res, fmt.Errorf("the subscriptions received nothing in the measured phase")
	}
	res.MsgsPerSec = float64(l.Count) / (float64(l.End-l.First) / 1e9)
	res.Samples = int64(l.Count)
	res.Dropped = l.Dropped
	res.Threads = l.Threads
	if l.Disorder > 0 {
		return res, fmt.Errorf("%d messages arrived out of order (%d dropped)", l.Disorder, l.Dropped)
	}
	return res, nil
}

// benchOffqSubs is the child of the subscriptions pattern: o.Size subscriptions, a goroutine
// each in Receive, counted together; it reports once every one has had its end marker, with
// its OS thread count then.
func benchOffqSubs(ctx context.Context, c *peer.Child, o peerArg) error {
	b, err := bus.Open(o.Bus, bus.WithDir(o.Dir), bus.WithLogger(childLogger(o)), bus.WithName("offq bench "+o.Role))
	if err != nil {
		return err
	}
	defer b.Close()
	subs := make([]*bus.Subscription, o.Size)
	for i := range subs {
		subs[i], err = b.Subscribe(subsTopic(i), bus.WithWait(waitOf(o.Mode)), bus.WithOverflow(bus.Block),
			bus.WithQueueDepth(o.Depth), bus.WithoutHistory())
		if err != nil {
			return err
		}
	}
	counters := make([]streamCounter, len(subs))
	errs := make(chan error, len(subs))
	var wg sync.WaitGroup
	for i, s := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc := &counters[i]
			for {
				m, err := s.Receive(ctx)
				if err != nil {
					errs <- err
					return
				}
				d := m.Data()
				end := sc.add(binary.LittleEndian.Uint64(d[0:]), binary.LittleEndian.Uint64(d[8:]))
				m.Release()
				if end {
					return
				}
			}
		}()
	}
	if err := c.Encode(benchLine{Type: benchReady}); err != nil {
		return err
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	var sum streamCounter
	for _, x := range counters {
		sum.count += x.count
		sum.dropped += x.dropped
		sum.disorder += x.disorder
		if x.first != 0 && (sum.first == 0 || x.first < sum.first) {
			sum.first = x.first
		}
		sum.end = max(sum.end, x.end)
	}
	threads, err := procstat.Threads()
	if err != nil {
		return err
	}
	if err := c.Encode(benchLine{Type: benchCounts, Count: sum.count, First: sum.first, End: sum.end,
		Dropped: sum.dropped, Disorder: sum.disorder, Threads: threads}); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}
