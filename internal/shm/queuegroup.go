package shm

// Queue groups. An inbox opened with InboxConfig.Group is a member of the named group (kind
// 2; the group's hash and name length in its header, the name after the pattern). Publishers
// deliver each message to one member of each group whose pattern matches the topic (the bus
// picks it: round robin, passing over a member whose queue is more than half full when
// another has room), through the normal push, so the member's overflow policy applies.
//
// A member that leaves — closes its subscription, or dies and is reaped — does not hand what
// it had not taken to another member: the messages still queued are released and counted, per
// topic, as queue-group drops (topicEntry.groupDropped; RequestStats.GroupDropped). So is a
// message sent to a member that was chosen from a target list and closed before the push. A message a
// member had taken and not released when it died is released by the reaper like any held
// message (ReapReport.Held). So every message published to a group is taken by exactly one
// member, or counted as dropped (by the member's overflow policy, or as a group drop), or was
// held by a member that died.

// Group returns the queue group the inbox is a member of ("" if none). It reads shared memory
// (and allocates the string): for building target lists, not for the data path.
func (in *Inbox) Group() (_ string) {
	defer unguard(guard(), nil)
	st := in.v.hdr.state.Load()
	if wordStatus(st) != inboxOpen || wordGen(st) != in.gen {
		return ""
	}
	return in.v.r.groupString(in.v.index)
}

// countGroupDrop counts, on its topic, a message released from a queue-group member's inbox
// that the member never took.
func (r *Region) countGroupDrop(h Handle) {
	b, err := r.buffer(h)
	if err != nil {
		return
	}
	if t := b.s.topic; t < r.cfg.Topics {
		e, _ := r.topicEntry(t)
		e.groupDropped.Add(1)
	}
}
