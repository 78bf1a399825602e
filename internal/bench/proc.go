package bench

// The processes of offq bench: this program run again in the bench role (see roles.go),
// through internal/peer, talking in JSON lines. Stopping a child closes its stdin; a child
// also ends when this process does, however it ends.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/offq/offq/internal/peer"
)

// Line types a bench child writes.
const (
	benchReady  = "ready"  // set up, pinned, waiting for messages
	benchCounts = "result" // a subscriber's counts, after the end marker
)

// benchLine is one line a bench child writes on its stdout.
type benchLine struct {
	Type     string `json:"type"`
	Count    uint64 `json:"count,omitempty"`    // messages received in the measured phase
	First    int64  `json:"first,omitempty"`    // floor.Now at the first of them
	End      int64  `json:"end,omitempty"`      // floor.Now at the end marker
	Dropped  uint64 `json:"dropped,omitempty"`  // sequence numbers never received
	Disorder uint64 `json:"disorder,omitempty"` // sequence numbers at or below one already received
	Threads  int    `json:"threads,omitempty"`  // the child's OS threads at the end (subscriptions)
}

// benchProc is a running child.
type benchProc struct {
	name string
	p    *peer.Proc
	tail *tailBuffer // the end of its stderr, for error messages

	stopping atomic.Bool
}

// childStop bounds how long a child may take to finish once told to.
const childStop = 10 * time.Second

// start runs a child playing what arg says, with extra files as its peer.Child.File(0),
// File(1), ... If the child exits before stop is called, fail is called with the reason (it
// cancels the case).
func (bn *bencher) start(name string, fail context.CancelCauseFunc, extra []*os.File, arg peerArg) (*benchProc, error) {
	arg.CPU, arg.LogLevel = bn.cpus[1], bn.env.LogLevel
	if arg.Dir == "" {
		arg.Dir = bn.tmp
	}
	bp := &benchProc{name: name, tail: &tailBuffer{max: 4096}}
	p, err := peer.Launch(peer.Spec{Role: Role, Name: name, Arg: arg, Files: extra, Stderr: bp.tail,
		Deadline: time.Now().Add(bn.o.warmup + bn.o.duration + 2*caseTimeout)})
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	bp.p = p
	bn.log.Debug("bench: started", zap.String("child", name), zap.Int("child_pid", p.Pid()), zap.Any("arg", arg))
	go func() {
		<-p.Exited()
		if !bp.stopping.Load() {
			fail(bp.failure())
		}
	}()
	return bp, nil
}

// failure describes how the child ended early.
func (bp *benchProc) failure() error {
	why := "exit status 0"
	if err := bp.p.Err(); err != nil {
		why = err.Error()
	}
	if t := strings.TrimSpace(bp.tail.String()); t != "" {
		why += ": " + t
	}
	return fmt.Errorf("%s ended early: %s", bp.name, why)
}

// expect waits for the child's next line, which must be of type typ.
func (bp *benchProc) expect(ctx context.Context, typ string) (benchLine, error) {
	var l benchLine
	if err := bp.p.Decode(ctx, &l); err != nil {
		select {
		case <-bp.p.Exited():
			return l, bp.failure()
		default:
		}
		return l, fmt.Errorf("waiting for %s to say %s: %w", bp.name, typ, context.Cause(ctx))
	}
	if l.Type != typ {
		return l, fmt.Errorf("%s said %q, want %q", bp.name, l.Type, typ)
	}
	return l, nil
}

// stop tells the child to finish (its stdin ends) and waits for it to exit, killing it after
// a grace period. It returns the child's error, if it failed.
func (bp *benchProc) stop() error {
	bp.stopping.Store(true)
	if err := bp.p.Stop(childStop); err != nil {
		return bp.failure()
	}
	return nil
}

// stopAll stops every child and joins their errors.
func stopAll(ps []*benchProc) error {
	for _, bp := range ps {
		bp.stopping.Store(true)
		bp.p.CloseStdin()
	}
	var errs []error
	for _, bp := range ps {
		if err := bp.stop(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
