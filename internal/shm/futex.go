package shm

import (
	"context"
	"sync/atomic"
	"time"
)

// sleepOn sleeps on the futex word until cond holds, ctx is done or deadline (if set) passes.
//
// No wake-up is lost: the sleeper announces itself (waiters++), reads the word, re-checks
// cond, and only then sleeps, and only while the word still has the value it read. A waker
// makes cond true, then reads waiters, and if any bumps the word and calls FUTEX_WAKE. All of
// these are sequentially consistent atomics, so either the waker sees the announcement or the
// sleeper's re-check sees the waker's change; the futex compares the word in the kernel, so a
// bump between the re-check and the sleep makes the sleep return at once.
func sleepOn(ctx context.Context, word, waiters *atomic.Uint32, deadline time.Time, cond func() bool) error {
	var stop func() bool
	var woke chan struct{}
	defer func() {
		// If the wake-up callback has started, wait for it: it writes the word, and the
		// caller may unmap the region as soon as this returns.
		if stop != nil && !stop() {
			<-woke
		}
	}()
	for {
		waiters.Add(1)
		seq := word.Load()
		if cond() {
			waiters.Add(^uint32(0))
			return nil
		}
		if err := ctx.Err(); err != nil {
			waiters.Add(^uint32(0))
			return err
		}
		d := longSleep
		if !deadline.IsZero() {
			d = time.Until(deadline)
			if d <= 0 {
				waiters.Add(^uint32(0))
				return ErrTimeout
			}
			d = min(d, longSleep)
		}
		if stop == nil && ctx.Done() != nil {
			woke = make(chan struct{})
			stop = context.AfterFunc(ctx, func() {
				defer close(woke)
				word.Add(1)
				futexWakeAll(word)
			})
		}
		futexWaitOn(word, seq, d)
		waiters.Add(^uint32(0))
	}
}
