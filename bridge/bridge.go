package bridge

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"go.uber.org/zap"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/topics"
)

// Header names of the NATS messages a Bridge exports.
const (
	HeaderCodec       = "Offq-Codec"       // the codec recorded on the topic, or CodecNone
	HeaderFingerprint = "Offq-Fingerprint" // the type fingerprint recorded on the topic, 16 hex digits; absent for CodecNone
	HeaderOrigin      = "Offq-Origin"      // the exporting bridge's id
	HeaderSeq         = "Offq-Seq"         // the message's sequence number on its topic on the origin bus
	HeaderSkipped     = "Offq-Skipped"     // origin sequence numbers just before this one that the exporter did not send on purpose (looped)
	HeaderTime        = "Offq-Time"        // when the message was published on the origin bus, Unix nanoseconds
	HeaderType        = "Offq-Type"        // the Go type's name recorded on the topic with the codec ("main.Reading"); absent if none
)

// CodecNone is the Offq-Codec of a message from a topic that records no codec (untyped bytes).
const CodecNone = "none"

// Bridge forwards messages between a local bus and NATS (see the package documentation). It
// is safe for concurrent use by multiple goroutines.
type Bridge struct {
	b   *bus.Bus
	nc  *nats.Conn
	id  string
	log *zap.Logger
	o   options

	ctx     context.Context
	cancel  context.CancelFunc
	run     sync.WaitGroup
	reqRun  sync.WaitGroup // imported requests waiting for their local reply (importReply)
	exports []*bus.Subscription
	imports []*nats.Subscription

	// mu serialises imports, and guards the table of recent imports the exporters consult:
	// an import holds it from before its local publish until it is recorded, so an exporter
	// that receives the imported message finds it recorded.
	mu     sync.Mutex
	closed bool
	pubs   map[string]importTopic
	recent map[topicSeq]uint64 // -> payload hash
	ring   []topicSeq
	next   int

	forwarded, imported, dropped, mismatched, looped atomic.Uint64
	reconnects, disconnects, gaps                    atomic.Uint64
	queueDrops                                       atomic.Uint64 // of closed export queues
	reqs                                             atomic.Int64  // exported requests in flight
	closing                                          atomic.Bool
	closeOnce                                        sync.Once

	// pmu orders the exporters' publishes while disconnected against the reconnect handler:
	// a message published while the connection is down waits in nats.go's reconnect buffer
	// (pending) and counts as forwarded only once the connection is back and has sent it.
	pmu     sync.Mutex
	pending uint64

	// last is the last origin sequence number imported per (origin, topic), for Gaps.
	last map[originTopic]uint64
}

type originTopic struct{ origin, topic string }

type importTopic struct {
	p *bus.Publisher
}

type topicSeq struct {
	topic string
	seq   uint64
}

// Stats is a snapshot of a Bridge's counters.
type Stats struct {
	Forwarded   uint64 // local messages published to NATS
	Imported    uint64 // NATS messages published on the local bus
	Dropped     uint64 // messages lost: local queue overflow, NATS refusal, slow consumer, local refusal, a reply too large for the bus
	Mismatched  uint64 // imported messages refused because their type differs from the local topic's
	Looped      uint64 // messages not forwarded because this bridge imported them (or sent them)
	Reconnects  uint64 // NATS reconnections
	Disconnects uint64 // NATS disconnections
	Gaps        uint64 // messages an importer never saw: missing origin sequence numbers of a topic, per origin bridge
	Pending     uint64 // messages exported while NATS was down, waiting in nats.go's reconnect buffer
	Connected   bool   // whether the NATS connection is up now
}

// New connects to the NATS server(s) at url (a comma-separated list, as nats.Connect takes)
// and starts bridging b as the options say. The caller keeps ownership of b and must Close
// the Bridge before closing b.
func New(b *bus.Bus, url string, opts ...Option) (*Bridge, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt.apply(&o); err != nil {
			return nil, fmt.Errorf("bridge: %w", err)
		}
	}
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("bridge: %w", err)
	}
	if o.id == "" {
		o.id = nuid.Next()
	}
	br := &Bridge{
		b: b, id: o.id, o: o, log: o.logger.With(zap.String("bridge", o.id)),
		pubs: make(map[string]importTopic), recent: make(map[topicSeq]uint64),
		ring: make([]topicSeq, o.recent), last: make(map[originTopic]uint64),
	}
	br.ctx, br.cancel = context.WithCancel(context.Background())
	nopts := []nats.Option{
		nats.Name("offq-bridge " + o.id),
		nats.MaxReconnects(-1),
		nats.NoEcho(),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if br.closing.Load() {
				return // Close closes the connection: not news
			}
			br.disconnects.Add(1)
			br.log.Warn("nats disconnected", zap.Error(err))
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			br.reconnects.Add(1)
			br.pmu.Lock()
			n := br.pending
			br.forwarded.Add(n) // the reconnect sent the buffer first
			br.pending = 0
			br.pmu.Unlock()
			br.log.Warn("nats reconnected", zap.String("url", nc.ConnectedUrlRedacted()), zap.Uint64("buffered messages sent", n))
		}),
		nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
			br.log.Warn("nats error", zap.Error(err))
		}),
	}
	nc, err := nats.Connect(url, append(nopts, o.nats...)...)
	if err != nil {
		br.cancel()
		return nil, fmt.Errorf("bridge: connect %q: %w", url, err)
	}
	br.nc = nc
	for _, p := range o.imports {
		s, err := nc.Subscribe(p, br.importMsg)
		if err != nil {
			br.Close()
			return nil, fmt.Errorf("bridge: import %q: %w", p, err)
		}
		br.imports = append(br.imports, s)
	}
	// The import subscriptions must reach the server before anything is exported, or a
	// message published now by a peer could be missed; Flush is the round trip that says so.
	if len(br.imports) > 0 {
		if err := nc.Flush(); err != nil {
			br.log.Warn("nats flush", zap.Error(err))
		}
	}
	sopts := []bus.SubscribeOption{bus.WithOverflow(bus.DropOldest), bus.WithoutHistory()}
	if o.queueDepth > 0 {
		sopts = append(sopts, bus.WithQueueDepth(o.queueDepth))
	}
	for _, p := range o.exports {
		s, err := b.Subscribe(p, sopts...)
		if err != nil {
			br.Close()
			return nil, fmt.Errorf("bridge: export %q: %w", p, err)
		}
		br.exports = append(br.exports, s)
		br.run.Add(1)
		go br.export(s)
	}
	br.publishStats()
	br.run.Add(1)
	go br.mirrorStats()
	br.log.Info("bridging", zap.Strings("export", o.exports), zap.Strings("import", o.imports),
		zap.String("nats", nc.ConnectedUrlRedacted()))
	return br, nil
}

// statsEvery is how often the bridge copies its counters into its participant slot, where
// offq exporter and offq stat read them.
const statsEvery = 500 * time.Millisecond

func (br *Bridge) mirrorStats() {
	defer br.run.Done()
	t := time.NewTicker(statsEvery)
	defer t.Stop()
	for {
		select {
		case <-br.ctx.Done():
			return
		case <-t.C:
			br.publishStats()
		}
	}
}

func (br *Bridge) publishStats() {
	s := br.Stats()
	br.b.RecordBridgeCounters(bus.BridgeCounters{ID: br.id, Forwarded: s.Forwarded, Imported: s.Imported, Dropped: s.Dropped,
		Reconnects: s.Reconnects, Disconnects: s.Disconnects, Mismatched: s.Mismatched, Looped: s.Looped, Gaps: s.Gaps,
		Pending: s.Pending, Connected: s.Connected})
}

// ID returns the bridge's instance id, as carried in the Offq-Origin header.
func (br *Bridge) ID() string { return br.id }

// Conn returns the bridge's NATS connection.
func (br *Bridge) Conn() *nats.Conn { return br.nc }

// Stats returns a snapshot of the bridge's counters.
func (br *Bridge) Stats() Stats {
	st := Stats{
		Forwarded: br.forwarded.Load(), Imported: br.imported.Load(),
		Dropped:    br.dropped.Load() + br.queueDrops.Load() + br.exportQueueDrops(),
		Mismatched: br.mismatched.Load(), Looped: br.looped.Load(),
		Reconnects: br.reconnects.Load(), Disconnects: br.disconnects.Load(), Gaps: br.gaps.Load(),
		Connected: br.nc != nil && br.nc.IsConnected(),
	}
	br.pmu.Lock()
	st.Pending = br.pending
	br.pmu.Unlock()
	for _, s := range br.imports {
		if n, err := s.Dropped(); err == nil && n > 0 {
			st.Dropped += uint64(n)
		}
	}
	return st
}

// exportQueueDrops reads the drop counters of the export subscriptions' queues.
func (br *Bridge) exportQueueDrops() uint64 {
	if len(br.exports) == 0 {
		return 0
	}
	var n uint64
	for _, s := range br.exports {
		if st, err := s.Stats(); err == nil {
			n += st.DropOldest + st.DropNewest + st.DropTimeout
		}
	}
	return n
}

// Close stops the bridge: it stops exporting, flushes what was handed to NATS, unsubscribes
// and closes the NATS connection. It does not close the bus. Close is idempotent.
func (br *Bridge) Close() error {
	br.closeOnce.Do(func() {
		br.closing.Store(true)
		br.queueDrops.Store(br.exportQueueDrops())
		br.cancel()
		for _, s := range br.exports {
			s.Close()
		}
		br.run.Wait()
		if br.nc != nil {
			for _, s := range br.imports {
				s.Unsubscribe()
			}
			if br.nc.IsConnected() {
				br.nc.FlushTimeout(br.o.timeout)
			}
		}
		br.mu.Lock()
		br.closed = true // no import starts a request from now on
		br.mu.Unlock()
		br.reqRun.Wait() // imported requests waiting for local replies (br.ctx is cancelled)
		br.mu.Lock()
		for _, it := range br.pubs {
			it.p.Close()
		}
		br.mu.Unlock()
		if br.nc != nil {
			br.nc.Close()
		}
		br.pmu.Lock()
		br.dropped.Add(br.pending) // still in the reconnect buffer: never sent
		br.pending = 0
		br.pmu.Unlock()
		br.publishStats() // the final counts stay in the slot until the bus closes
	})
	return nil
}

// export forwards the messages of one local subscription to NATS.
func (br *Bridge) export(s *bus.Subscription) {
	defer br.run.Done()
	skipped := map[string]uint64{} // per topic: looped messages not sent since the last one sent
	for m, err := range s.Messages(br.ctx) {
		if err != nil {
			return
		}
		// Copy the payload out under the fault guard: a region cut under it is an error here,
		// not a SIGBUS in the hash or in the NATS client.
		var data []byte
		if err := m.Read(func(d []byte) error { data = append([]byte(nil), d...); return nil }); err != nil {
			br.dropped.Add(1)
			br.log.Warn("not forwarded", zap.String("pattern", s.Pattern()), zap.Error(err))
			continue
		}
		topic, seq := m.Topic(), m.Seq()
		if br.wasImported(topic, seq, data) {
			// Imported by this bridge (a request too: the local responders answer it, or
			// nobody does): never sent back to NATS.
			br.looped.Add(1)
			skipped[topic]++
			continue
		}
		if m.IsRequest() {
			msg := &nats.Msg{Subject: topic, Data: data, Header: make(nats.Header, 7)}
			br.setHeaders(msg, m)
			addr, _ := m.ReplyAddress()
			br.exportRequest(topic, msg, addr)
			continue
		}
		msg := &nats.Msg{Subject: topic, Data: data, Header: make(nats.Header, 7)}
		br.setHeaders(msg, m)
		if n := skipped[topic]; n > 0 {
			msg.Header.Set(HeaderSkipped, strconv.FormatUint(n, 10))
			delete(skipped, topic)
		}
		br.forward(topic, msg)
	}
}

// setHeaders sets the offq headers of an exported message (see the package documentation).
func (br *Bridge) setHeaders(msg *nats.Msg, m bus.Message) {
	msg.Header.Set(HeaderOrigin, br.id)
	msg.Header.Set(HeaderSeq, strconv.FormatUint(m.Seq(), 10))
	msg.Header.Set(HeaderTime, strconv.FormatInt(m.Time().UnixNano(), 10))
	if c, fp := m.Codec(); fp != 0 {
		msg.Header.Set(HeaderCodec, c)
		msg.Header.Set(HeaderFingerprint, fmt.Sprintf("%016x", fp))
		if tn := m.TypeName(); tn != "" {
			msg.Header.Set(HeaderType, tn)
		}
	} else {
		msg.Header.Set(HeaderCodec, CodecNone)
	}
}

// forward publishes msg to NATS and counts it: forwarded when the connection is up (nats.go
// has it in the connection's buffer), pending while it is down (nats.go keeps it in its
// reconnect buffer, sent at the reconnect or lost at Close), dropped if nats.go refuses it.
func (br *Bridge) forward(topic string, msg *nats.Msg) {
	br.pmu.Lock()
	defer br.pmu.Unlock()
	up := br.nc.IsConnected()
	if err := br.nc.PublishMsg(msg); err != nil {
		br.dropped.Add(1)
		br.log.Debug("not forwarded", zap.String("topic", topic), zap.Error(err))
		return
	}
	if up {
		br.forwarded.Add(1)
	} else {
		br.pending++
	}
}

func payloadHash(p []byte) uint64 {
	h := fnv.New64a()
	h.Write(p)
	return h.Sum64()
}

// wasImported reports whether the local message (topic, seq) with payload p was published by
// this bridge's importer, and forgets it if so.
func (br *Bridge) wasImported(topic string, seq uint64, p []byte) bool {
	br.mu.Lock()
	defer br.mu.Unlock()
	if len(br.recent) == 0 {
		return false
	}
	k := topicSeq{topic, seq}
	h, ok := br.recent[k]
	if !ok || h != payloadHash(p) {
		return false
	}
	delete(br.recent, k)
	return true
}

// remember records an imported message; the oldest record goes when the table is full. Called
// with mu held.
func (br *Bridge) remember(k topicSeq, h uint64) {
	if old := br.ring[br.next]; old.topic != "" {
		delete(br.recent, old)
	}
	br.ring[br.next] = k
	br.next = (br.next + 1) % len(br.ring)
	br.recent[k] = h
}

// importMsg publishes one NATS message on the local bus.
func (br *Bridge) importMsg(m *nats.Msg) {
	if m.Header.Get(HeaderOrigin) == br.id {
		br.looped.Add(1)
		return
	}
	if err := topics.ValidateName(m.Subject); err != nil {
		br.dropped.Add(1)
		return
	}
	var fp uint64
	codecName := m.Header.Get(HeaderCodec)
	if codecName == CodecNone {
		codecName = ""
	}
	if s := m.Header.Get(HeaderFingerprint); s != "" {
		v, err := strconv.ParseUint(s, 16, 64)
		if err != nil || v == 0 || codecName == "" || len(codecName) > 16 {
			br.mismatched.Add(1)
			br.log.Warn("bad type header", zap.String("topic", m.Subject), zap.String("fingerprint", s), zap.String("codec", codecName))
			return
		}
		fp = v
	}
	br.mu.Lock()
	defer br.mu.Unlock()
	if br.closed {
		return
	}
	if m.Reply == "" {
		// Requests are sent to NATS from goroutines of their own and may overtake the
		// messages after them: their sequence numbers say nothing of losses.
		br.countGap(m)
	}
	it, err := br.importTopic(m.Subject)
	if err != nil {
		br.dropped.Add(1)
		br.log.Warn("import", zap.String("topic", m.Subject), zap.Error(err))
		return
	}
	if fp == 0 {
		// Untyped bytes (from an untyped topic, or a NATS client that sent no offq headers)
		// onto a typed topic would reach typed subscribers as decode errors.
		if haveCodec, have := it.p.Codec(); have != 0 {
			br.mismatched.Add(1)
			br.log.Debug("untyped message refused by a typed topic", zap.String("topic", m.Subject),
				zap.Bool("offq headers", m.Header.Get(HeaderOrigin) != ""), zap.String("local codec", haveCodec))
			return
		}
	}
	if err := it.p.ClaimCodec(codecName, fp, m.Header.Get(HeaderType)); err != nil {
		haveCodec, have := it.p.Codec()
		br.mismatched.Add(1)
		br.log.Warn("type mismatch", zap.String("topic", m.Subject), zap.String("codec", codecName),
			zap.String("fingerprint", fmt.Sprintf("%016x", fp)), zap.String("local codec", haveCodec),
			zap.String("local fingerprint", fmt.Sprintf("%016x", have)))
		return
	}
	ctx, cancel := context.WithTimeout(br.ctx, br.o.timeout)
	before := it.p.Published()
	var pr bus.PendingRequest
	if m.Reply != "" {
		pr, err = requestAt(ctx, it.p, m.Data, originTime(m))
	} else {
		err = publishAt(ctx, it.p, m.Data, originTime(m))
	}
	after := it.p.Published()
	cancel()
	if err != nil {
		br.dropped.Add(1)
		br.log.Debug("not imported", zap.String("topic", m.Subject), zap.Error(err))
		return
	}
	br.imported.Add(1)
	if m.Reply != "" {
		br.reqRun.Add(1) // with mu held and closed false: before Close waits for reqRun
		go br.importReply(pr, m)
	}
	// The message took one sequence number in (before, after]; other local publishers may have
	// taken the rest. Each candidate is recorded with the payload's hash, so the exporter skips
	// only a message with these bytes (and if a local publisher sent the same bytes at the same
	// moment, skipping either one forwards the same thing).
	h := payloadHash(m.Data)
	for s := before + 1; s <= after && s-before <= 64; s++ {
		br.remember(topicSeq{m.Subject, s}, h)
	}
}

// originTime returns the origin's publish time from m's Offq-Time header, or the zero time
// (publish now) when it has none or a bad one.
func originTime(m *nats.Msg) time.Time {
	ns, err := strconv.ParseInt(m.Header.Get(HeaderTime), 10, 64)
	if err != nil || ns <= 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// publishAt publishes data on p stamped with the origin's publish time at (the zero time:
// now), so that local subscribers' Message.Time and Age measure from the origin.
func publishAt(ctx context.Context, p *bus.Publisher, data []byte, at time.Time) error {
	l, err := p.Loan(len(data))
	if err != nil {
		return err
	}
	if err := l.Write(data); err != nil {
		l.Discard()
		return err
	}
	return p.Send(ctx, l.WithTime(at))
}

// maxGapKeys bounds the (origin, topic) pairs the importer follows for Gaps.
const maxGapKeys = 1 << 16

// countGap counts the origin sequence numbers of m's topic that the importer never saw since
// the last message from the same origin bridge, less those the exporter skipped on purpose. A
// sequence number that does not move forward (the origin's bus was recreated) starts afresh.
// Called with mu held.
func (br *Bridge) countGap(m *nats.Msg) {
	origin := m.Header.Get(HeaderOrigin)
	seq, err := strconv.ParseUint(m.Header.Get(HeaderSeq), 10, 64)
	if origin == "" || err != nil {
		return
	}
	skipped, _ := strconv.ParseUint(m.Header.Get(HeaderSkipped), 10, 64)
	k := originTopic{origin, m.Subject}
	last, ok := br.last[k]
	if ok && seq > last+1+skipped {
		br.gaps.Add(seq - last - 1 - skipped)
	}
	if !ok && len(br.last) >= maxGapKeys {
		clear(br.last) // bounded memory: each pair starts afresh, counting nothing at first
	}
	br.last[k] = seq
}

// importTopic returns the local publisher for topic, creating it. Called with mu held.
func (br *Bridge) importTopic(topic string) (importTopic, error) {
	if it, ok := br.pubs[topic]; ok {
		return it, nil
	}
	p, err := br.b.Publisher(topic)
	if err != nil {
		return importTopic{}, err
	}
	it := importTopic{p: p}
	br.pubs[topic] = it
	return it, nil
}

// Request/reply across hosts. A local request on an exported topic reaches the exporter like
// any message: the exporter sends it as a NATS request (nats.Conn.RequestMsg) and answers the
// local requester with the NATS reply (ReplyAddress.Respond), from a goroutine of its own, so
// that the export stream does not wait for it. An imported NATS message with a reply subject
// is sent on the local bus as a request (Publisher.SendRequest); the first local reply goes
// back to the NATS requester (nats.Msg.Respond). A request nobody answers in time
// (WithRequestTimeout) is dropped and counted in Stats.Dropped; the requester times out.

// maxRequestsInFlight bounds the requests a bridge carries at once in each direction.
const maxRequestsInFlight = 256

// exportRequest sends a local request to NATS and answers it with the reply, in a goroutine.
// A request beyond maxRequestsInFlight is dropped.
func (br *Bridge) exportRequest(topic string, msg *nats.Msg, addr bus.ReplyAddress) {
	if br.reqs.Add(1) > maxRequestsInFlight {
		br.reqs.Add(-1)
		br.dropped.Add(1)
		return
	}
	br.run.Add(1)
	go func() {
		defer br.run.Done()
		defer br.reqs.Add(-1)
		ctx, cancel := context.WithTimeout(br.ctx, br.o.reqTimeout)
		defer cancel()
		reply, err := br.nc.RequestMsgWithContext(ctx, msg)
		if err != nil {
			br.dropped.Add(1)
			br.log.Debug("request not answered over NATS", zap.String("topic", topic), zap.Error(err))
			return
		}
		br.forwarded.Add(1)
		if err := addr.Respond(br.ctx, reply.Data); err != nil {
			// The reply is lost: count it. If it was too large for this bus (the remote
			// responder's doing), say so, and tell the local requester with an error reply,
			// so that it fails now instead of at its timeout.
			br.dropped.Add(1)
			if !errors.Is(err, bus.ErrTooLarge) {
				br.log.Debug("reply not delivered", zap.String("topic", topic), zap.Error(err))
				return
			}
			br.log.Warn("reply from NATS too large for the bus: the local requester gets an error reply",
				zap.String("topic", topic), zap.Int("bytes", len(reply.Data)), zap.Int("max", br.b.MaxMessageSize()))
			why := fmt.Sprintf("reply too large: %d bytes from NATS, largest buffer %v", len(reply.Data), bus.Size(br.b.MaxMessageSize()))
			if err := addr.RespondError(br.ctx, why); err != nil {
				br.log.Debug("error reply not delivered", zap.String("topic", topic), zap.Error(err))
			}
			return
		}
		br.imported.Add(1)
	}()
}

// importReply waits for the local reply to an imported NATS request and sends it back.
func (br *Bridge) importReply(pr bus.PendingRequest, m *nats.Msg) {
	defer br.reqRun.Done()
	ctx, cancel := context.WithTimeout(br.ctx, br.o.reqTimeout)
	defer cancel()
	reply, err := pr.Wait(ctx)
	var re *bus.ResponderError
	if errors.As(err, &re) {
		// The local responder answered with an error reply: carry it back as one (its bytes),
		// so that a bus requester behind the other side's bridge fails with it too.
		if err := m.Respond(bus.ErrorReply(re.Reason, bus.MaxErrorReason+len(bus.ErrorReplyPrefix))); err != nil {
			br.dropped.Add(1)
			return
		}
		br.forwarded.Add(1)
		return
	}
	if err != nil {
		br.dropped.Add(1)
		br.log.Debug("imported request not answered", zap.String("topic", m.Subject), zap.Error(err))
		return
	}
	data := reply.Clone()
	reply.Release()
	if err := m.Respond(data); err != nil {
		br.dropped.Add(1)
		return
	}
	br.forwarded.Add(1)
}

// requestAt sends data on p as a request stamped with the origin's publish time (see
// publishAt), without waiting for the reply.
func requestAt(ctx context.Context, p *bus.Publisher, data []byte, at time.Time) (bus.PendingRequest, error) {
	l, err := p.Loan(len(data))
	if err != nil {
		return bus.PendingRequest{}, err
	}
	if err := l.Write(data); err != nil {
		l.Discard()
		return bus.PendingRequest{}, err
	}
	return p.SendRequest(ctx, l.WithTime(at))
}
