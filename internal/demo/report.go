package demo

// What offq demo prints: a live line a second while the publisher runs, then the table and
// the verdict.

import (
	"fmt"
	"strings"
	"time"

	"github.com/offq/offq/topics"
	"github.com/offq/offq/transport"
)

// liveLine prints each child's rate over the progress reports since the previous line.
func (d *demo) liveLine() {
	now := time.Now()
	var b strings.Builder
	fmt.Fprintf(&b, "%5.1fs  %s %s  |", now.Sub(d.start).Seconds(), d.pub.name, rate(d.pub))
	for _, c := range d.subs {
		fmt.Fprintf(&b, "  %s %s", c.name, rate(c))
		if c.slow {
			fmt.Fprintf(&b, " (%s dropped)", human(float64(c.progress.Dropped)))
		}
	}
	fmt.Fprintln(d.out, b.String())
}

// rate returns c's message rate between its last two reports seen by successive live lines.
func rate(c *child) string {
	n, at := c.count(), c.progressAt
	if dt := at.Sub(c.prevAt).Seconds(); dt > 0 {
		c.lastRate = float64(n-min(n, c.prevCount)) / dt
		c.prevCount, c.prevAt = n, at
	}
	return fmt.Sprintf("%8s", human(c.lastRate)+"/s")
}

// human formats n as 950, 12.3k, 4.56M.
func human(n float64) string {
	switch {
	case n >= 1e6:
		return fmt.Sprintf("%.2fM", n/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1fk", n/1e3)
	}
	return fmt.Sprintf("%.0f", n)
}

// verdict is everything the demo checks at the end.
type verdict struct {
	final     map[string]uint64 // last sequence per topic
	pub       *peerMsg
	subs      []*child
	inbox     map[*child]*transport.InboxStats // read before the subscribers left
	allocated []int                            // buffers in use per class after everyone left
	leftover  []transport.ParticipantInfo      // participants other than us after everyone left
	exitErrs  []string

	failures []string
}

// expected returns how many messages were published on the topics pattern matches.
func (v *verdict) expected(pattern string) uint64 {
	var n uint64
	for _, t := range demoTopics {
		if topics.Match(pattern, t) {
			n += v.final[t]
		}
	}
	return n
}

func (v *verdict) ok() bool { return len(v.failures) == 0 }

func (v *verdict) fail(format string, args ...any) {
	v.failures = append(v.failures, fmt.Sprintf(format, args...))
}

// check decides whether c passed, and says why not.
func (v *verdict) check(c *child) bool {
	s, in, want := c.summary, v.inbox[c], v.expected(c.pattern)
	n := len(v.failures)
	if in == nil {
		v.fail("%s: its inbox was not found in the region", c.name)
		return false
	}
	drops := in.DropOldest + in.DropNewest + in.DropTimeout
	if s.Corrupt > 0 {
		v.fail("%s: %d messages failed verification (checksum, fill, topic or sequence)", c.name, s.Corrupt)
	}
	if s.Disorder > 0 {
		v.fail("%s: %d messages out of order", c.name, s.Disorder)
	}
	if s.Received+s.Dropped != want {
		v.fail("%s: received %d + dropped %d != %d published on its topics", c.name, s.Received, s.Dropped, want)
	}
	if s.Dropped != drops {
		v.fail("%s: %d sequence gaps, but its inbox counted %d drops", c.name, s.Dropped, drops)
	}
	if in.Corrupt > 0 {
		v.fail("%s: its inbox counted %d corrupt cells", c.name, in.Corrupt)
	}
	if !c.slow {
		if s.Dropped > 0 || !s.Reached {
			v.fail("%s: lost %d of %d messages (a fast subscriber must receive all)", c.name, s.Dropped, want)
		}
	} else if s.Received == 0 {
		v.fail("%s: received nothing", c.name)
	}
	return len(v.failures) == n
}

// report prints the publisher's line, the subscribers' table and the checks, and records
// failures in v.
func (d *demo) report(v *verdict) {
	p := v.pub
	el := time.Duration(p.ElapsedNS).Seconds()
	var per []string
	var sum uint64
	for _, t := range demoTopics {
		per = append(per, fmt.Sprintf("%d %s", v.final[t], t))
		sum += v.final[t]
	}
	fmt.Fprintf(d.out, "\npublisher: %d messages (%s) in %.2fs = %s msgs/s; Loan+write+Send p50 %s, p99 %s, max %s µs; %d pool stalls\n",
		p.Sent, strings.Join(per, ", "), el, human(float64(p.Sent)/el),
		us(p.SendTime.P50), us(p.SendTime.P99), us(p.SendTime.Max), p.Stalls)
	if want := uint64(float64(d.o.rate)*d.o.duration.Seconds() + 0.5); p.Sent != max(1, want) || sum != p.Sent {
		v.fail("publisher: sent %d, final sequence numbers add up to %d, want %d", p.Sent, sum, want)
	}

	header := []string{"subscriber", "pattern", "queue", "received", "dropped", "inbox drops", "corrupt", "order", "p50 µs", "p99 µs", "max µs", "check"}
	rows := [][]string{header}
	for _, c := range v.subs {
		s := c.summary
		drops := "?"
		if in := v.inbox[c]; in != nil {
			drops = fmt.Sprint(in.DropOldest + in.DropNewest + in.DropTimeout)
		}
		status := "ok"
		if !v.check(c) {
			status = "FAIL"
		}
		name := c.name
		if c.slow {
			name += " (1ms/msg)"
		}
		rows = append(rows, []string{name, c.pattern, fmt.Sprint(c.depth), fmt.Sprint(s.Received), fmt.Sprint(s.Dropped),
			drops, fmt.Sprint(s.Corrupt), fmt.Sprint(s.Disorder),
			us(s.Latency.P50), us(s.Latency.P99), us(s.Latency.Max), status})
	}
	fmt.Fprintln(d.out)
	printTable(d, rows)
	fmt.Fprintln(d.out, "(latency: from Send to Receive, including a sleeping subscriber's wake-up: spin 50 µs, then futex)")

	inUse := 0
	for _, n := range v.allocated {
		inUse += n
	}
	if inUse > 0 {
		v.fail("%d buffers still in use after every child left (per class: %v)", inUse, v.allocated)
	}
	for _, p := range v.leftover {
		v.fail("participant %d (%s, pid %d) still attached after its process left", p.Index, p.Name, p.PID)
	}
	for _, e := range v.exitErrs {
		v.fail("%s", e)
	}
	fmt.Fprintf(d.out, "\nafter the children exited: %d buffers in use, %d other participants attached\n", inUse, len(v.leftover))
	if !v.ok() {
		fmt.Fprintln(d.out, "\nFAIL:")
		for _, f := range v.failures {
			fmt.Fprintf(d.out, "  - %s\n", f)
		}
		for _, c := range v.subs {
			if !c.slow && c.summary.Dropped > 0 {
				fmt.Fprintf(d.out, "  (a fast subscriber that falls more than its queue of %d behind loses messages: this\n"+
					"  machine could not verify %d msgs/s of %d B for %d subscribers; try a lower --rate)\n",
					c.depth, d.o.rate, d.o.size, len(v.subs))
				break
			}
		}
		return
	}
	var fast uint64
	var slow *child
	for _, c := range v.subs {
		if c.slow {
			slow = c
		} else {
			fast += c.summary.Received
		}
	}
	who := fmt.Sprintf("the %d fast subscribers", len(v.subs)-1)
	if len(v.subs) == 2 {
		who = "the fast subscriber"
	}
	fmt.Fprintf(d.out, "\nverified: %s received every message of their topics (%d in all) intact and in order;\n", who, fast)
	fmt.Fprintf(d.out, "the slow one received %d and lost %d, every loss counted by its inbox (drop oldest),\n",
		slow.summary.Received, slow.summary.Dropped)
	fmt.Fprintf(d.out, "and its full queue never held the publisher back (%s msgs/s, Send p99 %s µs).\n",
		human(float64(p.Sent)/el), us(p.SendTime.P99))
}

// printTable prints rows with aligned columns: text left, numbers right.
func printTable(d *demo, rows [][]string) {
	width := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, cell := range r {
			width[i] = max(width[i], len([]rune(cell)))
		}
	}
	for _, r := range rows {
		var b strings.Builder
		for i, cell := range r {
			pad := strings.Repeat(" ", width[i]-len([]rune(cell)))
			if i > 0 {
				b.WriteString("  ")
			}
			if i < 2 || i == len(r)-1 {
				b.WriteString(cell + pad)
			} else {
				b.WriteString(pad + cell)
			}
		}
		fmt.Fprintln(d.out, strings.TrimRight(b.String(), " "))
	}
}

// us formats nanoseconds as microseconds.
func us(ns int64) string {
	switch {
	case ns >= 100_000:
		return fmt.Sprintf("%.0f", float64(ns)/1e3)
	case ns >= 10_000:
		return fmt.Sprintf("%.1f", float64(ns)/1e3)
	}
	return fmt.Sprintf("%.2f", float64(ns)/1e3)
}
