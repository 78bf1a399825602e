package bus

import (
	"fmt"
	"unicode"

	"github.com/offq/offq/internal/shm"
)

// Queue groups: see the package documentation, "Queue groups".

// WithQueueGroup makes the subscription a member of the queue group called name: each message
// published on a topic that the group's members' patterns match goes to one member of the
// group only (across processes), as NATS queue subscriptions do. Members of one group should
// subscribe to the same pattern. A member gets no history. The name is 1 to 64 bytes without
// spaces; with the pattern it must fit 128 bytes.
func WithQueueGroup(name string) SubscribeOption {
	return subOptionFunc(func(o *subOptions) error { o.group = name; return nil })
}

// ValidateQueueGroup reports whether name can name a queue group (WithQueueGroup): 1 to 64
// bytes, no spaces or control characters.
func ValidateQueueGroup(name string) error { return validGroup(name) }

func validGroup(name string) error {
	if len(name) == 0 || len(name) > 64 {
		return fmt.Errorf("%w: queue group %q: want 1 to 64 bytes", ErrInvalidOption, name)
	}
	for _, r := range name {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return fmt.Errorf("%w: queue group %q: spaces and control characters are not allowed", ErrInvalidOption, name)
		}
	}
	return nil
}

// qgroup is one queue group a publisher delivers to: its members whose pattern matches the
// topic, and where the round robin stands.
type qgroup struct {
	name    string
	members []shm.Inbox
	next    uint32
}

// splitGroups moves the queue-group members out of p.targets into p.groups (refresh).
func (p *Publisher) splitGroups() {
	p.groups = p.groups[:0]
	plain := p.targets[:0]
	for _, in := range p.targets {
		g := in.Group()
		if g == "" {
			plain = append(plain, in)
			continue
		}
		found := false
		for i := range p.groups {
			if p.groups[i].name == g {
				p.groups[i].members = append(p.groups[i].members, in)
				found = true
				break
			}
		}
		if !found {
			p.groups = append(p.groups, qgroup{name: g, members: []shm.Inbox{in}})
		}
	}
	p.targets = plain
}

// sendTargets returns the inboxes the next message goes to: every plain subscription and one
// member of each queue group. Without groups it is p.targets itself. The caller holds the send lock (p.mu).
func (p *Publisher) sendTargets() []shm.Inbox {
	if len(p.groups) == 0 {
		return p.targets
	}
	to := append(p.scratch[:0], p.targets...)
	for i := range p.groups {
		to = append(to, p.groups[i].pick())
	}
	p.scratch = to
	return to
}

// pick chooses the member for the next message: round robin, passing over a member whose
// queue is more than half full (a stalled or slow member) for the least loaded one.
func (g *qgroup) pick() shm.Inbox {
	n := uint32(len(g.members))
	k := g.next % n
	g.next++
	in := &g.members[k]
	if in.Len() <= in.Capacity()/2 {
		return *in
	}
	best, bestLen := k, in.Len()
	for j := uint32(1); j < n; j++ {
		c := &g.members[(k+j)%n]
		if l := c.Len(); l < bestLen {
			best, bestLen = (k+j)%n, l
			if l <= c.Capacity()/2 {
				break
			}
		}
	}
	return g.members[best]
}
