package shm

import (
	"context"
	"errors"
	"sync/atomic"
	"unsafe"
)

// The batched forms of the door: lend, send, take and release several messages in one call.
// They keep every reference recorded exactly where the single forms record it (the buffer's
// state word for a loan, a ring cell for a delivery, a held entry for a take), one message at
// a time, so a process killed in the middle of a batch leaves exactly what a process killed
// between single calls would: each message is loaned, in a cell, or held, and a reaper finds
// it. What a batch shares between its messages is the work that names no reference:
//
//   - one fault guard for the call;
//   - the topic's sequence and byte counters: one add each for the batch;
//   - one clock read;
//   - per target inbox, the reads of the tail and the wake-up check: the producer fills a run
//     of consecutive empty cells, each with its own compare-and-swap (the commit point, as in
//     push) followed by the tail's (see pushRun for why not one for the run), reads the tail
//     once for the run, and checks for a sleeping consumer once for the batch;
//   - the pools' allocation and free counters: one add per pool for the batch.
//
// A run stops at the first cell that is not empty for its position (a full ring, another
// producer's message, damage): the rest of the batch goes through the single push, which
// applies the inbox's overflow policy and repairs what it finds.

// MaxBatch is the most messages one batched call handles.
const MaxBatch = 64

// LoanBatch lends len(dst) buffers (at most MaxBatch) of at least n bytes each, as Loan does,
// into dst, and returns the part of dst it filled. If the pools run out before dst is full, it
// returns the loans it got and a nil error; with none, the error Loan would return. It
// allocates nothing.
//
// The pool's allocation count is added once, after the loop: a process killed inside
// LoanBatch leaves its loans recorded (the reaper ends them) and the count short by them, so
// PoolStats' in-use figure reads low until the next audit recounts it. A single Loan has the
// same window, one instruction and one buffer wide. (ReleaseBatch likewise, the other way.)
func (p *Participant) LoanBatch(dst []Loan, n int) ([]Loan, error) {
	got, err := LoanBatchInto(p, dst, n, loanSelf)
	return dst[:got], err
}

func loanSelf(l *Loan) *Loan { return l }

// LoanBatchInto is LoanBatch into the Loan of each element of dst, which loan returns: it
// fills them in place, for a caller whose loans hold a Loan among other fields, and returns
// how many it filled.
func LoanBatchInto[T any](p *Participant, dst []T, n int, loan func(*T) *Loan) (_ int, err error) {
	defer unguard(guard(), &err)
	if len(dst) > MaxBatch {
		dst = dst[:MaxBatch]
	}
	if len(dst) == 0 {
		return 0, nil
	}
	if n < 0 || n > int(p.r.maxSize) {
		_, err := p.r.alloc(p.owner, n) // the error a single Loan gives
		return 0, err
	}
	if err := p.r.Check(); err != nil {
		return 0, err
	}
	if !p.loaned.Load() {
		p.loaned.Store(true) // before the loans exist, so that Detach never misses them (see alloc)
	}
	got := 0
	var last *pool
	counted := 0
	for got < len(dst) {
		buf, ok := p.r.claim(p.owner, n, last, int64(got-counted))
		if !ok {
			break
		}
		if buf.p != last {
			if last != nil {
				last.noteAllocs(got - counted)
			}
			last, counted = buf.p, got
		}
		*loan(&dst[got]) = Loan{p: p, buf: buf}
		got++
	}
	if last != nil {
		last.noteAllocs(got - counted)
	}
	if got == 0 {
		buf, err := p.r.alloc(p.owner, n) // counts the failure as Loan does
		if err != nil {
			return 0, err
		}
		*loan(&dst[0]) = Loan{p: p, buf: buf}
		got = 1
	}
	return got, nil
}

// claim takes a free buffer of at least n bytes from the smallest class that has one, without
// counting it (see pool.claim). The caller has pending claims on pool last not counted yet.
func (r *Region) claim(owner uint32, n int, last *pool, pending int64) (Buffer, bool) {
	for i := range r.pools {
		p := &r.pools[i]
		if n > int(p.size) {
			continue
		}
		k := int64(0)
		if p == last {
			k = pending
		}
		if b, ok := p.claim(owner, k); ok {
			return b, true
		}
	}
	return Buffer{}, false
}

// noteAllocs counts k allocations at once (see noteAlloc).
func (p *pool) noteAllocs(k int) {
	if k <= 0 {
		return
	}
	if s := p.hdr.shards[p.r.shard].allocs.Add(uint64(k)); s/highWaterEvery != (s-uint64(k))/highWaterEvery {
		p.sampleHighWater()
	}
}

// SendBatch sends each of loans (at most MaxBatch; loan i with length lens[i]) on topic t to
// every inbox in to, as that many Sends would, in order: it writes each header (sequence
// numbers taken together, one time for the batch, or each loan's stamp), delivers the handles
// to each inbox in runs (see the top of this file), records them in the history if the topic
// keeps one, and ends the loans. Every loan must be p's and live: if one was sent or discarded
// already, SendBatch delivers nothing, ends the others and fails with ErrLoanEnded. The loans
// are consumed whatever the outcome, except by a batch of more than MaxBatch loans or with
// lengths that do not match them, which is refused whole. It allocates nothing.
func (t Topic) SendBatch(ctx context.Context, loans []Loan, lens []int, to []Inbox) (res SendResult, err error) {
	if len(loans) > MaxBatch || len(lens) != len(loans) {
		return res, errBatchShape
	}
	if len(loans) == 0 {
		return res, nil
	}
	defer unguard(guard(), &err)
	p := loans[0].p
	ended := false
	var scribbled error // a loan whose state word names no loan at all (see Loan.notOwned)
	var seen handleSet
	for i := range loans {
		switch {
		case loans[i].p == nil || loans[i].p != p:
			ended = true // ended, or another's
		case !loans[i].owned():
			ended = true
			if err := loans[i].notOwned(); err != ErrLoanEnded && scribbled == nil {
				scribbled = err
			}
		case !seen.add(loans[i].buf.h):
			ended = true // the same loan twice in the batch
		}
	}
	if ended || t.stale() {
		for i := range loans {
			if loans[i].p != nil {
				loans[i].end()
			}
		}
		if scribbled != nil {
			return res, scribbled
		}
		if ended {
			return res, ErrLoanEnded
		}
		return res, ErrTopicReclaimed
	}
	prefetchCells(to)
	var hs [MaxBatch]Handle
	var ss [MaxBatch]*slotHeader
	var outcomes [MaxBatch]error
	total := 0
	for _, n := range lens {
		total += n
	}
	t.e.bytes.Add(uint64(total))
	seq := t.e.seq.Add(uint64(len(loans))) - uint64(len(loans))
	now := int64(0)
	for i := range loans {
		l := &loans[i]
		st := l.stamp
		if st == 0 {
			if now == 0 {
				now = Now()
			}
			st = now
		}
		seq++
		l.buf.SetMeta(Meta{Len: uint32(lens[i]), Topic: t.index, Seq: seq, Stamp: st})
		hs[i], ss[i] = l.buf.h, l.buf.s
	}
	k := len(loans)
	// One target and no history: each loan's reference goes to its cell (handoff.go), if a
	// hand-off word is free; then outcomes says which loans ended into their cells.
	var owner uint32
	var w *atomic.Uint64
	if len(to) == 1 && t.depth == 0 {
		if w = p.takeHandoff(hs[0]); w != nil {
			defer giveHandoff(w)
			owner = p.owner
		}
	}
	for i := range to {
		if testHookFanOut != nil {
			testHookFanOut(i)
		}
		var errs []error
		if to[i].group || owner != 0 {
			errs = outcomes[:k] // to count what a member that left was not given; which loans ended
		}
		if err := to[i].pushBatch(ctx, hs[:k], ss[:k], errs, owner, w); err != nil {
			if errors.Is(err, ErrBadHandle) {
				for j := range loans {
					if owner == 0 || outcomes[j] != nil { // not ended into its cell
						loans[j].end()
					}
				}
				return res, corruptf("a buffer's header changed while on loan: %v", err)
			}
			if errors.Is(err, ErrClosed) {
				res.Closed++
				for _, e := range errs {
					if to[i].group && errors.Is(e, ErrClosed) {
						t.e.groupDropped.Add(1) // as send: the member left after it was chosen
					}
				}
			}
		}
	}
	for i := range loans {
		l := &loans[i]
		if t.depth > 0 && p.r.addRefs(l.buf.s, l.buf.h, 1) == nil {
			t.remember(l.buf.h)
		}
	}
	var bad error
	for i := range loans {
		if owner != 0 && outcomes[i] == nil {
			continue // ended into its cell
		}
		if err := loans[i].endOwned(); err != nil && bad == nil {
			bad = err
		}
	}
	return res, bad
}

// handleSet is a small set of handles on the stack (open addressing), for finding a loan
// listed twice in one batch without comparing every pair.
type handleSet [2 * MaxBatch]Handle

// add adds h and reports whether it was not there yet (h is never 0: a live loan's handle).
func (s *handleSet) add(h Handle) bool {
	i := uint64(h) * 0x9e3779b97f4a7c15 >> 57 // 7 bits: 2*MaxBatch entries
	for {
		switch s[i] {
		case 0:
			s[i] = h
			return true
		case h:
			return false
		}
		i = (i + 1) % uint64(len(s))
	}
}

var errBatchShape = errors.New("send batch: more than MaxBatch loans, or lengths that do not match them")

// pushBatch delivers hs (with the references of the loans ss: one is added to each as its
// cell commits, as push does) to the inbox in order. It returns ErrClosed (the rest is not
// delivered), an error wrapping ErrBadHandle (a loan's state word was scribbled), or the
// last error of a single push (a message dropped by the policy: the others are delivered).
// If errs is not nil, errs[i] receives message i's outcome (nil: delivered).
//
// With owner set (hand-off mode, see handoff.go), each loan's own reference goes to its cell,
// errs must not be nil, and errs[i] == nil says that loan i ended into its cell; word is the
// caller's hand-off word, which names each handle before its hand-off.
func (in *Inbox) pushBatch(ctx context.Context, hs []Handle, ss []*slotHeader, errs []error, owner uint32, word *atomic.Uint64) error {
	var last error
	pushed := false
	note := func(i int, err error) {
		if errs != nil {
			errs[i] = err
		}
	}
	fail := func(from int, err error) error {
		for i := from; errs != nil && i < len(hs); i++ {
			errs[i] = err
		}
		if pushed {
			wakeConsumer(in.v)
		}
		return err
	}
	for done := 0; done < len(hs); {
		n, redo, err := in.pushRun(hs[done:], ss[done:], owner, word)
		if err != nil {
			return fail(done, err)
		}
		if n > 0 {
			pushed = true
			for j := range n {
				note(done+j, nil)
				if redo&(1<<j) != 0 {
					// Taken back from behind the head (see pushRun): deliver it again.
					if owner != 0 {
						storeRelease(word, uint64(hs[done+j]))
					}
					err := in.push(ctx, hs[done+j], ss[done+j], owner)
					note(done+j, err)
					if errors.Is(err, ErrClosed) || errors.Is(err, ErrBadHandle) {
						for jj := j + 1; jj < n; jj++ {
							if redo&(1<<jj) != 0 {
								note(done+jj, err) // taken back, not delivered again
							}
						}
						return fail(done+n, err)
					}
					if err != nil {
						last = err
					}
				}
			}
			done += n
			continue
		}
		// The cell at the tail is not empty for it: the single push deals with every case
		// (helping a lagging tail, a full ring and its policy, damage), and wakes the consumer.
		if owner != 0 {
			storeRelease(word, uint64(hs[done]))
		}
		err = in.push(ctx, hs[done], ss[done], owner)
		note(done, err)
		if errors.Is(err, ErrClosed) || errors.Is(err, ErrBadHandle) {
			return fail(done+1, err)
		}
		if err != nil {
			last = err
		}
		done++
	}
	if pushed {
		wakeConsumer(in.v)
	}
	return last
}

// pushRun commits hs (at most 64) to the cells from the tail on, as that many pushes would
// on their fast path: for each, the cell is checked empty for its position, the loan's
// reference added, the cell committed with one compare-and-swap and the tail moved past it
// with another. What the run saves is the rest: the tail is read once (after our own tail
// CAS succeeds it is known), and the wake-up check and everything above the ring happen once
// per batch. It stops at the first cell that is not empty for its position and returns how
// many it committed (0: the single push must deal with the cell at the tail), or ErrClosed
// or a reference error if the first could not be. A message that a scribble left behind the
// head (see push) is taken back and its bit set in redo: the caller delivers it again.
//
// Why not one tail CAS for the whole run: a run of cells filled ahead of a lagging tail is a
// state single pushes never make. A take that finds a handle of the next lap in the head's
// cell concludes that the tail has passed it; and a scribble in a cell between the head and
// a lagging tail lets a second producer repair and refill a position already done, stranding
// its message behind the head. Both were found by the interleaving checker (batch
// scenarios); the per-cell tail keeps the window one step long, as in push. In 1-to-1 the
// tail's line stays in the producer's cache, so the extra CAS is local (docs/performance.md).
//
// In hand-off mode (owner set) each loan's reference is handed to its cell instead (see push),
// its handle stored into word first, and taken back into the loan if the cell is not
// committed or the message is taken back from behind the head.
func (in *Inbox) pushRun(hs []Handle, ss []*slotHeader, owner uint32, word *atomic.Uint64) (n int, redo uint64, err error) {
	hd := in.v.hdr
	r := in.v.r
	step()
	t := hd.tail.Load()
	for n < len(hs) && n < 64 {
		c := in.cell(t)
		step()
		v := c.Load()
		if v != in.empty(t) {
			break
		}
		// The whole generation, after the tail and the cell were read (see push).
		step()
		if !in.isOpen() {
			if n == 0 {
				return 0, 0, ErrClosed
			}
			break
		}
		// The tail again, after the cell (see push): a marker of a t the tail has passed is
		// not ours to fill. The single push deals with the cell at the tail as it is now.
		step()
		if hd.tail.Load() != t {
			break
		}
		step()
		var rerr error
		if owner != 0 {
			storeRelease(word, uint64(hs[n]))
			rerr = r.handOff(ss[n], hs[n], owner)
			if rerr == nil && testHookHandedOff != nil {
				testHookHandedOff(hs[n])
			}
		} else {
			rerr = r.addRefs(ss[n], hs[n], 1)
		}
		if rerr != nil {
			if n == 0 {
				return 0, 0, rerr
			}
			break // the next single push reports it
		}
		step()
		if !c.CompareAndSwap(v, uint64(hs[n])|in.parity(t)) {
			if err := in.takeBack(hs[n], ss[n], owner); err != nil && n == 0 {
				return 0, 0, err
			}
			break // (a reference that could not be taken back: the next push reports it)
		}
		n++
		step()
		if hd.tail.CompareAndSwap(t, t+1) {
			t++
			continue
		}
		// Someone moved the tail on (see push): a producer helping, or the head is past t
		// because a scribble had made a finished position look empty; then our message is
		// behind the head, where nobody would take it: take it back. Either way the run ends.
		step()
		if hd.head.Load() > t {
			step()
			if c.CompareAndSwap(uint64(hs[n-1])|in.parity(t), in.empty(t+in.cap)) {
				in.takeBack(hs[n-1], ss[n-1], owner) // (if it fails, so does the push again)
				hd.corrupt.Add(1)
				r.hdr.corrupt.Add(1)
				redo |= 1 << (n - 1)
			}
		}
		break
	}
	return n, redo, nil
}

// TakeBatch takes up to len(dst) messages (at most MaxBatch) of in, an inbox p owns, into p's
// held list, as that many Takes would: it waits as w says for the first, then takes those that
// are ready without waiting. It returns the part of dst it filled; it fails only if it took
// nothing (with Take's errors). Each message is its own held entry and is released on its own
// (Release or ReleaseBatch). It allocates nothing.
func (p *Participant) TakeBatch(ctx context.Context, in *Inbox, w Waiter, dst []Held) ([]Held, error) {
	n, err := TakeBatchInto(p, ctx, in, w, dst, heldSelf)
	return dst[:n], err
}

func heldSelf(h *Held) *Held { return h }

// TakeBatchInto is TakeBatch into the Held of each element of dst, which held returns: it
// fills them in place, for a caller whose messages hold a Held among other fields, and returns
// how many it filled.
func TakeBatchInto[T any](p *Participant, ctx context.Context, in *Inbox, w Waiter, dst []T, held func(*T) *Held) (_ int, err error) {
	defer unguard(guard(), &err)
	if len(dst) > MaxBatch {
		dst = dst[:MaxBatch]
	}
	got := 0
	if in.ring != nil {
		// Messages of the ring first, as many as are ready; a batch does not mix them with
		// the inbox's.
		for got < len(dst) {
			ok, err := in.ring.take(p, in, held(&dst[got]))
			if err != nil && got == 0 {
				return 0, err
			}
			if !ok || err != nil {
				break
			}
			got++
		}
		if got > 0 {
			return got, nil
		}
	}
	from := p.held.hint.Load()
	// After the first message the batch goes on past the head and moves it once every
	// headEvery positions and at the end (ringrun.go).
	var run takeRun
	for got < len(dst) {
		idx, err := p.reserveFrom(from)
		from = uint32(idx) + 1
		if err != nil {
			if got > 0 {
				break
			}
			return 0, err
		}
		var h Handle
		if got == 0 {
			if h, err = in.popInto(ctx, w, p, idx); err == nil {
				run = in.startRun()
			} else if err == errRingReady {
				p.unreserve(idx)
				ok, err := in.ring.take(p, in, held(&dst[0]))
				if err != nil {
					return 0, err
				}
				if ok {
					return 1, nil
				}
				continue
			}
		} else {
			var ok bool
			h, ok, err = run.next(p.held.word(uint32(idx)), uint64(idx))
			if err == nil && !ok {
				p.unreserve(idx)
				break
			}
		}
		if err != nil {
			p.unreserve(idx)
			if got > 0 {
				break
			}
			if errors.Is(err, ErrClosed) {
				if derr := p.r.Check(); derr != nil { // a zeroed inbox looks closed
					return 0, derr
				}
			}
			return 0, err
		}
		// Built in place: a Held returned by value would be copied twice more per message.
		if p.acceptInto(in, idx, h, held(&dst[got])) {
			got++
		} else {
			p.unreserve(idx)
		}
	}
	if got > 0 {
		run.end()
	}
	return got, nil
}

// reserveFrom is reserve starting its search at entry i: a batch goes on from the entry
// after the last one it took, instead of from the hint over entries it just filled.
func (p *Participant) reserveFrom(i uint32) (int, error) {
	l := p.held
	for range l.n {
		if i >= l.n {
			i = 0
		}
		w := l.word(i)
		if w.Load() == 0 && w.CompareAndSwap(0, heldReserved) {
			return int(i), nil
		}
		i++
	}
	return -1, ErrHeldFull
}

// ReleaseBatch releases each of hs as Release does, counting the buffers freed once per pool.
// It releases every message it can and returns ErrReleased if one was released already. The
// pool's allocation cursor is left on the first buffer the batch freed (Release leaves it on
// the buffer it freed): the next LoanBatch takes the same buffers again, so a stream of
// batches keeps a batch's worth of buffers in cache instead of walking the whole pool.
func ReleaseBatch(hs []Held) error { return ReleaseBatchOf(hs, heldSelf) }

// ReleaseBatchOf is ReleaseBatch of the Held of each element of ms, which held returns.
func ReleaseBatchOf[T any](ms []T, held func(*T) *Held) (err error) {
	defer unguard(guard(), &err)
	var last *pool
	freed := 0
	first := uint32(0)
	// The held list's hint is set once, to the first entry the batch cleared, instead of once
	// per message (each a locked store, since every message of a batch has its own entry): the
	// next TakeBatch starts its search there and finds the batch's entries free in a row.
	var hintP *Participant
	hint := uint32(0)
	flush := func() {
		if last != nil && freed > 0 {
			last.noteFrees(freed)
			storeHint(&last.next, first)
		}
	}
	// Ask for every buffer's header line first: each release is a compare-and-swap on it,
	// which waits for the line, and another process (a publisher looking for free buffers,
	// the hardware's prefetcher on its behalf) may have read it since the take. Asked for
	// together, the lines travel together.
	for i := range ms {
		if m := held(&ms[i]); m.p != nil && m.idx >= 0 {
			prefetchWrite(unsafe.Pointer(m.buf.s))
		}
	}
	for i := range ms {
		m := held(&ms[i])
		if m.p == nil {
			err = ErrReleased
			continue
		}
		if m.idx < 0 {
			if m.ReleaseCopy() != nil {
				err = ErrReleased
			}
			continue
		}
		p, idx, ok, rerr := m.p.unholdUncounted(int(m.idx), m.buf.h)
		if rerr != nil {
			err = ErrReleased
			continue
		}
		if hintP == nil {
			hintP, hint = m.p, uint32(m.idx)
		}
		if !ok {
			continue
		}
		if p != last {
			flush()
			last, freed = p, 0
		}
		if freed == 0 {
			first = idx
		}
		freed++
	}
	flush()
	if hintP != nil {
		hintP.held.setHint(hint)
	}
	return err
}

// noteFrees counts k frees at once (see noteFree; the cursor is set by the caller).
func (p *pool) noteFrees(k int) {
	if k > 0 {
		p.hdr.shards[p.r.shard].frees.Add(uint64(k))
	}
}

// unholdUncounted is unhold without counting a free or setting the held list's hint (the
// caller does both once per batch): it reports the pool and slot of a buffer the release freed.
func (p *Participant) unholdUncounted(i int, h Handle) (_ *pool, _ uint32, freed bool, _ error) {
	l := p.held
	step()
	if i < 0 || uint32(i) >= l.n || !l.word(uint32(i)).CompareAndSwap(uint64(h), 0) {
		return nil, 0, false, ErrBadHandle
	}
	step()
	pl, idx, freed, err := p.r.drop(h)
	if err != nil && err != errHandleFree && err != errHandleStale {
		return nil, 0, false, err
	}
	if err != nil && testHookReleaseSwept != nil {
		testHookReleaseSwept(h) // freed by the sweep meanwhile (see unhold)
	}
	return pl, idx, freed, nil
}
