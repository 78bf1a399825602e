package shm

// Guarded reads for the layers above: each is one whole question about the region, answered
// under the fault guard, so a region whose file was truncated gives an error wrapping
// ErrCorrupt instead of SIGBUS.

// SubscriptionList returns every open inbox's name and pattern.
func (r *Region) SubscriptionList() (_ []Subscription, err error) {
	defer unguard(guard(), &err)
	return r.subscriptions(nil), nil
}

// InboxStatsOf returns the counters of inbox id (zero InboxStats and no error if it is not
// open any more).
func (r *Region) InboxStatsOf(id InboxID) (_ InboxStats, err error) {
	defer unguard(guard(), &err)
	for _, st := range r.inboxStats() {
		if st.ID == id {
			return st, nil
		}
	}
	return InboxStats{}, nil
}

// TopicName returns the name of topic i ("" if there is none).
func (r *Region) TopicName(i int) (_ string, err error) {
	defer unguard(guard(), &err)
	t, err := r.Topic(i)
	if err != nil {
		return "", nil
	}
	return t.Name(), nil
}

// TopicCodec returns the codec name and fingerprint recorded on topic i ("" and 0 if none).
func (r *Region) TopicCodec(i int) (codec string, fp uint64, err error) {
	defer unguard(guard(), &err)
	t, err := r.Topic(i)
	if err != nil {
		return "", 0, nil
	}
	fp, codec = t.Fingerprint()
	return codec, fp, nil
}

// TopicTypeName returns the name of the Go type recorded on topic i with its codec ("" if
// none).
func (r *Region) TopicTypeName(i int) (name string, err error) {
	defer unguard(guard(), &err)
	t, err := r.Topic(i)
	if err != nil {
		return "", nil
	}
	return t.typeNameRead(), nil
}

// RecordBridge marks p as a NATS bridge and records its counters in its slot.
func (p *Participant) RecordBridge(s BridgeStats) (err error) {
	defer unguard(guard(), &err)
	p.setBridgeStats(s)
	return nil
}

// Allocated walks every slot and counts those with references, per class: exact, unlike the
// pools' counters, but it reads every slot header (for tools and tests, not the data path).
func (r *Region) Allocated() (_ []int, err error) {
	defer unguard(guard(), &err)
	return r.countAllocated(), nil
}

// Targets appends to dst the open inboxes whose pattern match accepts (a publisher's fan-out
// list) and returns it. Read SubscriptionGen before calling it, so that a subscription that
// opens meanwhile moves the generation past the one the list is filed under.
func (r *Region) Targets(dst []Inbox, match func(pattern string) bool) (_ []Inbox, err error) {
	defer unguard(guard(), &err)
	for _, s := range r.subscriptions(nil) {
		if !match(s.Pattern) {
			continue
		}
		if in, err := r.inbox(s.ID); err == nil {
			dst = append(dst, in)
		}
	}
	return dst, nil
}

// EachTopic calls fn for every topic in the table, under the fault guard, until fn returns an
// error (which EachTopic returns).
func (r *Region) EachTopic(fn func(t Topic) error) (err error) {
	defer unguard(guard(), &err)
	for i := range int(r.cfg.Topics) {
		t, err := r.Topic(i)
		if err != nil {
			continue
		}
		if err := fn(t); err != nil {
			return err
		}
	}
	return nil
}

// OnTopic calls fn with topic i under the fault guard. It fails with ErrNotFound if the table
// has no topic i.
func (r *Region) OnTopic(i int, fn func(t Topic) error) (err error) {
	defer unguard(guard(), &err)
	t, err := r.Topic(i)
	if err != nil {
		return err
	}
	return fn(t)
}

// TopicGen returns the generation of topic entry i: it changes each time the entry is
// reclaimed, so a name cached with it is still the entry's name while it reads the same. It
// allocates nothing, and returns 0 for an index out of range or a faulting region.
func (r *Region) TopicGen(i int) (_ uint64) {
	if i < 0 || i >= int(r.cfg.Topics) {
		return 0
	}
	defer unguard(guard(), nil)
	e, _ := r.topicEntry(uint32(i))
	return e.gen.Load()
}

// TopicNameGen returns the name of topic i ("" if there is none) with the generation it was
// read at (see TopicGen): a name read while the entry was being reclaimed is "".
func (r *Region) TopicNameGen(i int) (name string, gen uint64, err error) {
	defer unguard(guard(), &err)
	t, err := r.Topic(i)
	if err != nil {
		return "", 0, nil
	}
	name = t.Name()
	if t.stale() || r.TopicGen(i) != t.gen {
		return "", 0, nil
	}
	if _, err := r.Topic(i); err != nil {
		return "", 0, nil // reclaimed while we read, its generation not yet bumped
	}
	return name, t.gen, nil
}
