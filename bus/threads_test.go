package bus

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/offq/offq/internal/peer"
	"github.com/offq/offq/internal/procstat"
)

// idleSubscriptions is how many subscriptions TestThousandIdleSubscriptionsFewThreads keeps
// waiting, each with a goroutine of its own in Receive.
const idleSubscriptions = 1000

// roleThousandSubs subscribes to idleSubscriptions topics, a goroutine in Receive on each,
// waits until every one is asleep, counts its OS threads, then publishes one message to each
// topic and waits until every goroutine has received its own. It says "threads N received M".
func roleThousandSubs(c *peer.Child) error {
	cfg := DefaultConfig()
	cfg.Classes = []Class{{Size: 64, Count: 2048}}
	cfg.Inboxes, cfg.Topics, cfg.Held, cfg.InboxCapacity = 1024, 1024, 2048, 4
	b, err := Open("threads", WithDir(os.Getenv("OFFQ_DIR")), WithConfig(cfg), WithReapInterval(0))
	if err != nil {
		return err
	}
	defer b.Close()
	ctx := c.Context()
	subs := make([]*Subscription, idleSubscriptions)
	for i := range subs {
		if subs[i], err = b.Subscribe(fmt.Sprintf("idle.%d", i), WithSpin(time.Microsecond)); err != nil {
			return err
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	received, wrong := 0, 0
	for i, s := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := s.Receive(ctx)
			if err != nil {
				return
			}
			mu.Lock()
			if m.Topic() == fmt.Sprintf("idle.%d", i) && string(m.Data()) == strconv.Itoa(i) {
				received++
			} else {
				wrong++
			}
			mu.Unlock()
			m.Release()
		}()
	}
	for i := 0; i < len(subs); {
		st, err := subs[i].Stats()
		if err != nil {
			return err
		}
		if st.Sleeping {
			i++
			continue
		}
		if ctx.Err() != nil {
			return fmt.Errorf("subscription %d never went to sleep", i)
		}
		runtime.Gosched()
	}
	threads, err := procstat.Threads()
	if err != nil {
		return err
	}
	for i := range subs {
		p, err := b.Publisher(fmt.Sprintf("idle.%d", i))
		if err != nil {
			return err
		}
		if err := p.Publish(ctx, []byte(strconv.Itoa(i))); err != nil {
			return err
		}
		p.Close()
	}
	wg.Wait()
	c.Send("threads %d received %d wrong %d", threads, received, wrong)
	return nil
}

// 1,000 subscriptions in one process, each with a goroutine waiting in Receive, run on a
// handful of OS threads (waiting goroutines park; one leader per participant sleeps on its
// bell), and each receives the message published to it. Before the doorbell each sleeping
// Receive held a thread of its own in FUTEX_WAIT: about 1,005 threads.
func TestThousandIdleSubscriptionsFewThreads(t *testing.T) {
	p := peer.Start(t, "thousand-subs", "OFFQ_DIR="+t.TempDir())
	line, err := p.Expect("threads ", 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var threads, received, wrong int
	if _, err := fmt.Sscanf(line, "%d received %d wrong %d", &threads, &received, &wrong); err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	t.Logf("%d idle subscriptions, a goroutine each in Receive: %d OS threads", idleSubscriptions, threads)
	if threads >= 32 {
		t.Errorf("%d idle subscriptions run on %d OS threads, want fewer than 32", idleSubscriptions, threads)
	}
	if received != idleSubscriptions || wrong != 0 {
		t.Errorf("%d of %d subscriptions received their message (%d a wrong one)", received, idleSubscriptions, wrong)
	}
	if err := p.Wait(time.Minute); err != nil {
		t.Fatal(err)
	}
}
