package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/offq/offq/internal/shm"
	"github.com/offq/offq/topics"
)

// Bus is one process's attachment to a named bus: a shared-memory region that every process
// using the bus maps. Open it once per process and share it; a Bus is safe for concurrent use
// by multiple goroutines.
type Bus struct {
	name string
	r    *shm.Region
	p    *shm.Participant
	log  *zap.Logger

	mu     sync.Mutex
	topics map[string]shm.Topic
	subs   map[*Subscription]struct{}
	pubs   map[*Publisher]struct{}
	names  []atomic.Pointer[topicName] // topic index -> name, filled on first use

	lastReap  atomic.Int64  // Now() of the last reap on pool exhaustion
	corrupt   uint64        // the region's corrupt-word count the reaper last logged (its goroutine only)
	stopReap  chan struct{} // closed by Close; the reaper goroutine then returns
	reaperRun sync.WaitGroup

	retired []retiredRing // slot rings of closed publishers, freed once read (ring.go); under mu

	replies replyPool  // reply inboxes of requests in flight (request.go)
	reqWait shm.Waiter // how a requester waits for its reply

	closed atomic.Bool

	// use counts the calls under way that touch the region outside a Publisher's own gate:
	// receiving, releasing and reading messages, replying, closing a subscription, the topic
	// and statistics lookups. Close waits for them before it detaches and unmaps, and refuses
	// new ones (ErrClosed). A call passes it with no locked instruction: a counter per P of the
	// scheduler, and the fence paid once by Close (shm.UseGate).
	use *shm.UseGate
}

// enter enters the Bus's use gate (see Bus.use): it returns false, and the caller must not
// touch the region, once Close has begun.
func (b *Bus) enter() bool { return b.use.Enter() }

// exit leaves the use gate.
func (b *Bus) exit() { b.use.Exit() }

// testHookCloseWaits, if set, runs when Close finds calls under way in its use gate (see
// Bus.use) and waits for them; testHookInUse runs inside the gate in Message.Release ("release"),
// in a publisher's unpin ("unpin"), in Receive ("receive"), in Loan ("loan") and in Publish
// ("publish").
var (
	testHookCloseWaits func()
	testHookInUse      func(op string)
	// testHookSubsClosed runs in Close once the Bus's subscriptions are closed, before it
	// wakes the requests waiting for replies (closeReplies).
	testHookSubsClosed func()
)

// closedError is the error of an operation refused because the Bus is closed.
func (b *Bus) closedError(op, name string) error { return &Error{Op: op, Name: name, Err: ErrClosed} }

// errReleasedByClose is what a release after Bus.Close returns: Close released the message
// (it is ErrReleased and ErrClosed both).
var errReleasedByClose = fmt.Errorf("%w by Bus.Close (%w)", ErrReleased, ErrClosed)

// gate counts the calls under way on one Publisher, so that Bus.Close does not unmap the
// region under them, and lets the publisher's topic go once the last of them has left a
// closed publisher (idle), which the Bus's use gate (shm.UseGate) cannot tell. A Publisher's sends
// do not pass it: they hold the publisher's send lock, which serialises them anyway, and
// Bus.Close takes that lock too (see Publisher.mu); entering and leaving the gate would be
// two more locked instructions per Send.
type gate struct {
	inflight atomic.Int64
	closed   *atomic.Bool
	idle     func() // if set, called (at least once) when the gate is shut and the last call has left
}

// gateShut is added to inflight by shut: the exit that brings inflight down to it is the last
// call under way through a shut gate.
const gateShut = 1 << 40

func (g *gate) enter() bool {
	g.inflight.Add(1)
	if g.closed.Load() {
		g.inflight.Add(-1)
		return false
	}
	return true
}

// hold adds a reference to the gate as a call would, without checking closed: a later exit
// gives it back.
func (g *gate) hold() { g.inflight.Add(1) }

func (g *gate) exit() {
	if g.inflight.Add(-1) == gateShut && g.idle != nil {
		g.idle()
	}
}

// shut marks the gate shut (its owner's closed flag is already set, so calls that enter from
// now on leave at once) and calls idle now if no call is under way, else leaves it to the last
// one's exit. It does not wait.
func (g *gate) shut() {
	if g.inflight.Add(gateShut) == gateShut && g.idle != nil {
		g.idle()
	}
}

// waitIdle waits until no call is under way; closed is already set, so none can start.
func (g *gate) waitIdle() {
	for pause := time.Microsecond; g.inflight.Load()%gateShut > 0; pause = min(2*pause, time.Millisecond) {
		time.Sleep(pause)
	}
}

// Open attaches to the bus called name, creating its region if it does not exist ("detect,
// else create and configure, then attach"). The region is a file in /dev/shm unless WithDir
// says otherwise. Open fails with an error wrapping ErrIncompatibleConfig if the region exists
// with a configuration other than the one given by WithConfig, and ErrCorrupt if the file is
// not a valid region.
func Open(name string, opts ...Option) (*Bus, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt.apply(&o); err != nil {
			return nil, &Error{Op: "open", Name: name, Err: err}
		}
	}
	if err := o.validate(); err != nil {
		return nil, &Error{Op: "open", Name: name, Err: err}
	}
	r, created, err := shm.OpenOrCreate(name, shm.Options{
		Dir: o.dir, Mode: o.mode, Config: o.config, AllowForeignOwner: o.allowForeign, ReadyTimeout: o.readyTimeout,
	})
	if err != nil {
		return nil, &Error{Op: "open", Name: name, Err: err}
	}
	// Reap before attaching: if nobody is attached and a participant died, the reap is also an
	// audit that repairs whatever a crash left behind (see shm.Region.Maintain). Its cost does
	// not grow with the region unless it finds something to do.
	rep, reapErr := r.Maintain()
	if errors.Is(reapErr, ErrCorrupt) {
		// The region faulted or is damaged: attaching would only meet it again.
		r.Close()
		return nil, &Error{Op: "open", Name: name, Err: reapErr}
	}
	p, err := r.Attach(o.name)
	if err != nil {
		r.Close()
		return nil, &Error{Op: "open", Name: name, Err: err}
	}
	b := &Bus{
		name:   name,
		r:      r,
		p:      p,
		log:    o.logger.With(zap.String("bus", name), zap.Int("participant", p.Index())),
		topics: make(map[string]shm.Topic),
		subs:   make(map[*Subscription]struct{}),
		pubs:   make(map[*Publisher]struct{}),
		names:  make([]atomic.Pointer[topicName], r.Config().Topics),
	}
	b.use = shm.NewUseGate(&b.closed)
	b.reqWait = shm.Waiter{Strategy: o.reqWait}
	b.corrupt = r.Corrupt() // damage found before we came was logged by whoever was running then
	b.log.Debug("attached", zap.String("path", r.Path()), zap.Bool("created", created))
	b.logReap("open", rep, reapErr)
	if o.reapEvery > 0 {
		b.stopReap = make(chan struct{})
		b.reaperRun.Add(1)
		go b.reapLoop(o.reapEvery)
	}
	return b, nil
}

// reap reclaims what dead participants left, sweeps if a sweep was requested and this process
// gets the lease (shm.Region.Maintain), and logs it. It reports whether any buffer came back
// to a pool (or may have: a repaired reference count).
func (b *Bus) reap(why string) bool {
	rep, err := b.r.Maintain()
	b.logReap(why, rep, err)
	return err == nil && rep.Queued+rep.Held+rep.Loans+rep.Repaired+rep.Swept > 0
}

func (b *Bus) logReap(why string, rep shm.ReapReport, err error) {
	if err != nil {
		b.log.Warn("reap failed", zap.String("trigger", why), zap.Error(err))
		return
	}
	if rep.Participants > 0 || rep.Repaired > 0 || rep.Swept > 0 || rep.TopicsFreed > 0 {
		b.log.Info("reclaimed what dead participants left", zap.String("trigger", why),
			zap.Int("participants", rep.Participants), zap.Int("inboxes", rep.Inboxes),
			zap.Int("queued", rep.Queued), zap.Int("held", rep.Held), zap.Int("loans", rep.Loans),
			zap.Bool("audited", rep.Audited), zap.Int("repaired", rep.Repaired), zap.Int("swept", rep.Swept),
			zap.Int("topics_freed", rep.TopicsFreed))
	}
}

func (b *Bus) reapLoop(every time.Duration) {
	defer b.reaperRun.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-b.stopReap:
			return
		case <-t.C:
			b.tick()
		}
	}
}

// tick is the reaper goroutine's periodic work: reap, sample the pools' high-water marks and
// log new damage, under the fault guard (a truncated region file faults here as anywhere).
func (b *Bus) tick() {
	b.reap("timer")
	b.freeRetired()
	if err := b.sample(); err != nil {
		b.log.Warn("reading the region failed", zap.Error(err))
	}
}

func (b *Bus) sample() error {
	b.r.PoolStats() // samples the pools' high-water (low-water) marks
	b.logCorrupt()
	return nil
}

// logCorrupt logs, from the reaper's goroutine, any damage found in the region since it last
// looked: bad words that some process (any process) dropped or repaired. Corruption is never
// silent, yet a storm of it costs one log line per reap interval.
func (b *Bus) logCorrupt() {
	n := b.r.Corrupt()
	if n > b.corrupt {
		b.log.Warn("bad data found in the region and dropped (a faulty process writes into it, or the file was modified)",
			zap.Uint64("new", n-b.corrupt), zap.Uint64("total", n))
	}
	b.corrupt = n
}

// reapOnExhaustion requests a sweep and reaps when a loan found the pools exhausted (a dead
// process may be holding buffers, or a kill left a reference nobody holds), at most once per
// 10ms. It reports whether the reap gave buffers back, so that the loan is tried again only
// then: each try that fails counts in the pool's allocation failures, and a failed Loan should
// count once.
func (b *Bus) reapOnExhaustion() bool {
	now, last := shm.Now(), b.lastReap.Load()
	if now-last < int64(10*time.Millisecond) || !b.lastReap.CompareAndSwap(last, now) {
		return false
	}
	if err := b.r.RequestSweep(); err != nil {
		b.log.Warn("requesting a sweep failed", zap.Error(err))
	}
	return b.reap("pool exhausted")
}

// Name returns the bus's name.
func (b *Bus) Name() string { return b.name }

// Path returns the file that holds the bus's region.
func (b *Bus) Path() string { return b.r.Path() }

// Config returns the configuration of the bus's region: its size classes, queue capacity,
// history depth and the other table sizes, as its creator fixed them.
func (b *Bus) Config() Config { return b.r.Config() }

// MaxMessageSize returns the largest message the bus can carry: its largest size class.
func (b *Bus) MaxMessageSize() int { return largestClass(b) }

// Subscribers returns how many open subscriptions, in every process attached to the bus, have
// a pattern that matches topic.
func (b *Bus) Subscribers(topic string) (int, error) {
	if !b.enter() {
		return 0, b.closedError("subscribers", topic)
	}
	defer b.exit()
	subs, err := b.r.SubscriptionList()
	if err != nil {
		return 0, &Error{Op: "subscribers", Name: topic, Err: err}
	}
	n := 0
	for _, s := range subs {
		if topics.ValidatePattern(s.Pattern) == nil && topics.Match(s.Pattern, topic) {
			n++
		}
	}
	return n, nil
}

// BridgeCounters are what a NATS bridge counts. Package bridge records them in its bus (see
// RecordBridgeCounters) so that offq exporter and offq stat show them beside the bus's own.
type BridgeCounters = shm.BridgeStats

// RecordBridgeCounters marks this process as a NATS bridge and records c in its slot of the
// bus, where every reader of the bus's counters finds them. Package bridge calls it;
// applications do not need to.
func (b *Bus) RecordBridgeCounters(c BridgeCounters) error {
	if !b.enter() {
		return b.closedError("record bridge counters", b.name)
	}
	defer b.exit()
	return b.p.RecordBridge(c)
}

// Close unsubscribes every subscription of this Bus (releasing the messages queued for them),
// releases every message still held, closes every publisher and detaches from the bus. Byte
// slices obtained from messages are invalid afterwards. The slot rings of its publishers
// (WithSlotRing) are freed once the live subscribers in other processes that read them have
// read them to their last message, or after half a second (ringDrainWait), whichever comes
// first. Close is idempotent.
func (b *Bus) Close() (err error) {
	if b.closed.Swap(true) {
		return nil
	}
	if b.stopReap != nil {
		close(b.stopReap)
		b.reaperRun.Wait()
	}
	b.mu.Lock()
	subs := make([]*Subscription, 0, len(b.subs))
	for s := range b.subs {
		subs = append(subs, s)
	}
	pubs := make([]*Publisher, 0, len(b.pubs))
	for p := range b.pubs {
		pubs = append(pubs, p)
	}
	b.mu.Unlock()
	for _, s := range subs {
		s.close()
	}
	for _, s := range subs {
		s.wait()
	}
	if testHookSubsClosed != nil {
		testHookSubsClosed()
	}
	b.closeReplies() // wakes requests waiting for replies
	// A Send finishes its fan-out; a Publish or Request its loan and send.
	for _, p := range pubs {
		p.gate.waitIdle()
		p.waitSends() // a send holds the publisher's lock, not its gate
	}
	// Then the calls under way in the use gate: receives (closing the inboxes woke them),
	// loans, releases, reads, replies and lookups. closed is set, so none starts from now on,
	// and once they have left nothing of this Bus touches the region.
	if testHookCloseWaits != nil && b.use.Busy() {
		testHookCloseWaits()
	}
	b.use.WaitIdle()
	b.closeRings(pubs)
	held := b.p.Held()
	err = b.p.Detach()
	if held > 0 {
		// Messages the application still holds were released by Detach, but their byte
		// slices may still be in use: keep the mapping (it goes with the process) rather
		// than turn a late read into a crash.
		b.log.Warn("closed with messages still held; keeping the region mapped", zap.Int("held", held))
	} else {
		err = errors.Join(err, b.r.Close())
	}
	b.log.Debug("closed")
	return err
}

// Drain stops every subscription of this Bus from taking new messages once it has delivered
// what is queued (callbacks run for each), waits for that or for ctx, then closes the Bus.
func (b *Bus) Drain(ctx context.Context) error {
	if b.closed.Load() {
		return &Error{Op: "drain", Name: b.name, Err: ErrClosed}
	}
	b.mu.Lock()
	subs := make([]*Subscription, 0, len(b.subs))
	for s := range b.subs {
		subs = append(subs, s)
	}
	b.mu.Unlock()
	var errs []error
	for _, s := range subs {
		if err := s.Drain(ctx); err != nil && !errors.Is(err, ErrClosed) {
			errs = append(errs, err)
		}
	}
	errs = append(errs, b.Close())
	return errors.Join(errs...)
}

// topic returns the topic table entry for name, creating it (with history k) on first use.
func (b *Bus) topic(name string, history int) (shm.Topic, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if t, ok := b.topics[name]; ok {
		return t, nil
	}
	if err := topics.ValidateName(name); err != nil {
		return shm.Topic{}, err
	}
	t, err := b.p.LookupTopic(name, true, history)
	if errors.Is(err, shm.ErrTableFull) {
		// Free the entries nothing uses (mistyped names, topics whose processes are gone)
		// and try once more.
		if n, rerr := b.r.ReclaimTopics(b.p, topics.MatchValid); rerr == nil && n > 0 {
			b.log.Info("topic table full: freed unused topics", zap.Int("freed", n))
			t, err = b.p.LookupTopic(name, true, history)
		}
	}
	if err != nil {
		return shm.Topic{}, err
	}
	b.topics[name] = t
	return t, nil
}

// pinnedTopic returns the topic called name, pinned (see shm.Participant.PinTopic): while the
// pin is held, ReclaimTopics in any process leaves the entry alone. A cached entry that was
// reclaimed is dropped and the name looked up again. Unpin with b.p.UnpinTopic.
func (b *Bus) pinnedTopic(name string, history int) (shm.Topic, error) {
	for range 8 {
		t, err := b.topic(name, history)
		if err != nil {
			return shm.Topic{}, err
		}
		err = b.p.PinTopic(t)
		if !errors.Is(err, shm.ErrTopicReclaimed) {
			return t, err
		}
		b.mu.Lock()
		if c, ok := b.topics[name]; ok && c == t {
			delete(b.topics, name)
		}
		b.mu.Unlock()
	}
	return shm.Topic{}, shm.ErrTopicReclaimed // reclaimed eight times in a row: give up
}

// ReclaimTopics frees the bus's topic-table entries that nothing uses, while other processes
// may be attached: no process has a Publisher of the topic, it keeps no message in its
// history, no subscription's pattern matches it and no message of it is queued or held. It
// returns how many it freed. A Bus runs it by itself when the table is full; `offq reap`
// runs it too. It reads every buffer's header: it is for occasional use.
func (b *Bus) ReclaimTopics() (int, error) {
	if !b.enter() {
		return 0, b.closedError("reclaim topics", b.name)
	}
	defer b.exit()
	n, err := b.r.ReclaimTopics(b.p, topics.MatchValid)
	if err != nil {
		return n, &Error{Op: "reclaim topics", Name: b.name, Err: err}
	}
	return n, nil
}

// topicName is a topic's name cached with the entry's generation it was read at.
type topicName struct {
	name string
	gen  uint64
}

// topicName returns the name of topic index i, reading the table the first time. Once the
// Bus is closed it returns the name cached, if any.
func (b *Bus) topicName(i uint32) string {
	if int(i) >= len(b.names) {
		return ""
	}
	if !b.enter() {
		if p := b.names[i].Load(); p != nil {
			return p.name
		}
		return ""
	}
	defer b.exit()
	// The entry may have been reclaimed and taken by another name since the name was cached:
	// the generation tells (a message's topic cannot be reclaimed while the message is held).
	if p := b.names[i].Load(); p != nil && p.gen == b.r.TopicGen(int(i)) {
		return p.name
	}
	n, gen, err := b.r.TopicNameGen(int(i))
	if err != nil || n == "" {
		return ""
	}
	b.names[i].Store(&topicName{name: n, gen: gen})
	return n
}

// topicCodec returns the codec and fingerprint recorded on topic i.
func (b *Bus) topicCodec(i uint32) (string, uint64) {
	if !b.enter() {
		return "", 0
	}
	defer b.exit()
	c, fp, err := b.r.TopicCodec(int(i))
	if err != nil {
		return "", 0
	}
	return c, fp
}
