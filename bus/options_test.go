package bus

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/offq/offq/internal/shm"
	"github.com/offq/offq/topics"
)

func TestOpenOptionErrors(t *testing.T) {
	dir := t.TempDir()
	bad := shm.DefaultConfig()
	bad.InboxCapacity = 1000
	cfgFile := filepath.Join(dir, "c.toml")
	os.WriteFile(cfgFile, []byte("inboxes = 8\n"), 0o600)
	for _, tc := range []struct {
		name string
		opts []Option
		want string
	}{
		{"empty dir", []Option{WithDir("")}, "empty directory"},
		{"nil logger", []Option{WithDir(dir), WithLogger(nil)}, "nil logger"},
		{"bad mode", []Option{WithDir(dir), WithMode(0o400)}, "mode"},
		{"bad config", []Option{WithDir(dir), WithConfig(bad)}, "inbox_capacity 1000"},
		{"config twice", []Option{WithDir(dir), WithConfig(shm.DefaultConfig()), WithConfigFile(cfgFile)}, "both given"},
		{"missing file", []Option{WithDir(dir), WithConfigFile(filepath.Join(dir, "nope.toml"))}, "nope.toml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Open("opts", tc.opts...)
			if err == nil {
				b.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, ErrInvalidOption) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q: want ErrInvalidOption mentioning %q", err, tc.want)
			}
		})
	}
	// A config file is applied, and a bus opened with another configuration is refused.
	b, err := Open("fromfile", WithDir(dir), WithConfigFile(cfgFile))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if got := b.r.Config().Inboxes; got != 8 {
		t.Fatalf("inboxes %d, want 8 from the file", got)
	}
	if _, err := Open("fromfile", WithDir(dir), WithConfig(shm.DefaultConfig())); !errors.Is(err, ErrIncompatibleConfig) {
		t.Fatalf("incompatible config: %v", err)
	}
}

func TestSubscribeAndPublisherErrors(t *testing.T) {
	b := openTest(t, t.TempDir())
	for _, tc := range []struct {
		name string
		fn   func() error
		is   error
		want string
	}{
		{"bad pattern", func() error { _, err := b.Subscribe("a..b"); return err }, topics.ErrInvalidName, "empty token"},
		{"depth not power of two", func() error { _, err := b.Subscribe("a", WithQueueDepth(3)); return err }, ErrInvalidOption, "power of two"},
		{"depth too large", func() error { _, err := b.Subscribe("a", WithQueueDepth(1<<20)); return err }, ErrInvalidOption, "inbox_capacity"},
		{"block limit without block", func() error { _, err := b.Subscribe("a", WithBlockLimit(time.Second)); return err }, ErrInvalidOption, "WithOverflow(Block)"},
		{"wildcard publisher", func() error { _, err := b.Publisher("a.*"); return err }, topics.ErrInvalidName, "wildcard"},
		{"negative history", func() error { _, err := b.Publisher("a", WithHistory(-1)); return err }, ErrInvalidOption, "history"},
		{"history too deep", func() error { _, err := b.Publisher("deep", WithHistory(1000)); return err }, nil, "history 1000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.fn()
			if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v: want %v mentioning %q", err, tc.is, tc.want)
			}
		})
	}
}

func TestOversizeAndExhaustedPool(t *testing.T) {
	cfg := shm.DefaultConfig()
	cfg.Classes = []shm.Class{{Size: 256, Count: 2}, {Size: 1024, Count: 1}}
	b := openTest(t, t.TempDir(), WithConfig(cfg))
	ctx := ctxT(t)
	pub, _ := b.Publisher("big")
	if err := pub.Publish(ctx, make([]byte, 2000)); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "1024") {
		t.Fatalf("oversize: %v", err)
	}
	var loans []Loan
	for range 3 { // two 256 B buffers, then the 1 KiB one
		l, err := pub.Loan(100)
		if err != nil {
			t.Fatal(err)
		}
		loans = append(loans, l)
	}
	_, err := pub.Loan(100)
	var pe *shm.PoolError
	if !errors.Is(err, ErrPoolExhausted) || !errors.As(err, &pe) || pe.Size != 100 {
		t.Fatalf("exhausted: %v", err)
	}
	for _, l := range loans {
		if err := l.Discard(); err != nil {
			t.Fatal(err)
		}
	}
	if n := inUse(b); n != 0 {
		t.Fatalf("%d buffers in use after discarding every loan", n)
	}
}

func TestReceiveCancelAndClose(t *testing.T) {
	b := openTest(t, t.TempDir())
	for _, w := range []WaitStrategy{BusySpin, SpinThenSleep, Sleep} {
		s, err := b.Subscribe("idle", WithWait(w))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		if _, err := s.Receive(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%v: Receive past its deadline: %v", w, err)
		}
		cancel()
		// Close wakes a Receive blocked in another goroutine.
		done := make(chan error, 1)
		go func() {
			_, err := s.Receive(context.Background())
			done <- err
		}()
		if w == Sleep {
			// Wait until the receiver has announced itself asleep on the inbox's futex, so
			// that Close has a sleeper to wake.
			deadline := time.Now().Add(10 * time.Second)
			for !sleeping(b, s) && time.Now().Before(deadline) {
				runtime.Gosched()
			}
			if !sleeping(b, s) {
				t.Fatal("receiver never went to sleep")
			}
		}
		s.Close()
		select {
		case err := <-done:
			if !errors.Is(err, ErrClosed) {
				t.Fatalf("%v: Receive after Close: %v", w, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%v: Close did not wake Receive", w)
		}
	}
}

func TestConcurrentPublishersAndReceivers(t *testing.T) {
	b := openTest(t, t.TempDir())
	ctx := ctxT(t)
	s, _ := b.Subscribe("c.>", WithOverflow(Block), WithQueueDepth(64))
	const pubs, each = 4, 2000
	var wg sync.WaitGroup
	for i := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pub, err := b.Publisher("c." + string(rune('a'+i)))
			if err != nil {
				t.Error(err)
				return
			}
			for n := range each {
				if err := pub.Publish(ctx, []byte{byte(i), byte(n), byte(n >> 8)}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	// Two receivers share the subscription; together they see every message once.
	var mu sync.Mutex
	seen := make(map[[3]byte]bool)
	var rwg sync.WaitGroup
	for range 2 {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			for {
				mu.Lock()
				if len(seen) == pubs*each || ctx.Err() != nil {
					mu.Unlock()
					return
				}
				mu.Unlock()
				rctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
				m, err := s.Receive(rctx)
				cancel()
				if err != nil {
					continue
				}
				var k [3]byte
				copy(k[:], m.Data())
				m.Release()
				mu.Lock()
				if seen[k] {
					t.Errorf("message %v received twice", k)
				}
				seen[k] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	rwg.Wait()
	if len(seen) != pubs*each {
		t.Fatalf("received %d of %d", len(seen), pubs*each)
	}
	if n := inUse(b); n != 0 {
		t.Fatalf("%d buffers in use", n)
	}
}

func TestDrainHandler(t *testing.T) {
	b, err := Open("drain", WithDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	release := make(chan struct{})
	var got []string
	var mu sync.Mutex
	hs, err := b.Subscribe("d", WithOverflow(Block))
	if err != nil {
		t.Fatal(err)
	}
	err = hs.Handle(func(m Message) {
		<-release
		mu.Lock()
		got = append(got, string(m.Data()))
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := b.Publisher("d")
	for _, s := range []string{"1", "2", "3"} {
		pub.Publish(ctx, []byte(s))
	}
	close(release)
	if err := b.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "1,2,3" {
		t.Fatalf("handler saw %v before Drain returned", got)
	}
	if err := b.Drain(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Drain: %v", err)
	}
}

func sleeping(b *Bus, s *Subscription) bool {
	for _, st := range b.r.InboxStats() {
		if st.ID == s.in.ID() {
			return st.Sleeping
		}
	}
	return false
}

// The default participant name is the program's base name, not its path: under `go run` or
// `go test` the path is a temporary build directory, and every metric label would be one.
func TestDefaultNameIsBaseName(t *testing.T) {
	b, err := Open("defname", WithDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	want := filepath.Base(os.Args[0])
	if len(want) > 32 {
		want = want[:32]
	}
	for _, p := range b.r.Participants() {
		if p.Name != want {
			t.Fatalf("participant name %q, want %q (os.Args[0] is %q)", p.Name, want, os.Args[0])
		}
		return
	}
	t.Fatal("no participant")
}

// A failed Loan counts once in the pool's allocation failures, even when it reaps on the way
// (the reap finds nothing to give back, so the loan is not tried again).
func TestFailedLoanCountsOnce(t *testing.T) {
	cfg := shm.DefaultConfig()
	cfg.Classes = []shm.Class{{Size: 256, Count: 1}}
	b := openTest(t, t.TempDir(), WithConfig(cfg))
	pub, _ := b.Publisher("one")
	l, err := pub.Loan(10)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Discard()
	for i := range 3 {
		b.lastReap.Store(0) // every try may reap
		if _, err := pub.Loan(10); !errors.Is(err, ErrPoolExhausted) {
			t.Fatalf("Loan: %v", err)
		}
		if got := b.r.PoolStats()[0].AllocFails; got != uint64(i+1) {
			t.Fatalf("after %d failed loans: %d allocation failures", i+1, got)
		}
	}
}
