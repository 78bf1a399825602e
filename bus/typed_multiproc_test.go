package bus

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/offq/offq/codec"
	"github.com/offq/offq/internal/peer"
	"github.com/offq/offq/internal/shm"
)

// typedConfig has room for msgpack events of up to 70 KiB in flight on two subscribers.
func typedConfig() shm.Config {
	c := shm.DefaultConfig()
	c.Classes = []shm.Class{{Size: 256, Count: 512}, {Size: 4 << 10, Count: 256}, {Size: 64 << 10, Count: 16}, {Size: 1 << 20, Count: 16}}
	return c
}

// roleTypedPublisher: OFFQ_DIR, OFFQ_CODEC (struct, other, msgpack or raw), OFFQ_TOPIC,
// OFFQ_COUNT. Prints "refused ERROR" if the publisher cannot be created, else "ready"; then
// waits for "go", publishes messages 1..OFFQ_COUNT and prints "done".
func roleTypedPublisher(c *peer.Child) error {
	b, err := Open("mp", WithDir(os.Getenv("OFFQ_DIR")), WithName("typed-publisher"))
	if err != nil {
		return err
	}
	defer b.Close()
	topic := os.Getenv("OFFQ_TOPIC")
	count, _ := strconv.Atoi(os.Getenv("OFFQ_COUNT"))
	var publish func(seq uint64) error
	var perr error
	switch os.Getenv("OFFQ_CODEC") {
	case "struct":
		var p *TypedPublisher[reading]
		if p, perr = NewTypedPublisher(b, topic, codec.NewStruct[reading]()); perr == nil {
			publish = func(seq uint64) error {
				if seq%2 == 0 {
					r := makeReading(seq)
					return p.Publish(c.Context(), &r)
				}
				l, err := p.Loan() // written in place
				if err != nil {
					return err
				}
				*l.Value() = makeReading(seq)
				return p.Send(c.Context(), l)
			}
		}
	case "other":
		var p *TypedPublisher[otherReading]
		if p, perr = NewTypedPublisher(b, topic, codec.NewStruct[otherReading]()); perr == nil {
			publish = func(seq uint64) error { return p.Publish(c.Context(), &otherReading{Seq: seq}) }
		}
	case "msgpack":
		var p *TypedPublisher[event]
		if p, perr = NewTypedPublisher(b, topic, codec.NewMsgpack[event]()); perr == nil {
			publish = func(seq uint64) error { e := makeEvent(seq); return p.Publish(c.Context(), &e) }
		}
	case "raw":
		var p *TypedPublisher[[]byte]
		if p, perr = NewTypedPublisher(b, topic, codec.Raw{}); perr == nil {
			publish = func(seq uint64) error {
				data := make([]byte, 20+int(seq%300))
				fillPayload(data, 1, seq)
				return p.Publish(c.Context(), &data)
			}
		}
	default:
		return fmt.Errorf("codec %q", os.Getenv("OFFQ_CODEC"))
	}
	if perr != nil {
		c.Send("refused %v", perr)
		return nil
	}
	c.Send("ready")
	if l, err := c.Recv(); err != nil || l != "go" {
		return fmt.Errorf("waiting for go: %q %v", l, err)
	}
	for seq := uint64(1); seq <= uint64(count); seq++ {
		if err := publish(seq); err != nil {
			return fmt.Errorf("message %d: %w", seq, err)
		}
	}
	c.Send("done")
	return nil
}

// roleTypedSubscriber: OFFQ_DIR, OFFQ_CODEC (struct, msgpack or raw), OFFQ_PATTERN,
// OFFQ_EXPECT. Prints "refused ERROR" if the subscription cannot be made, else "ready"; then
// receives OFFQ_EXPECT messages, checking each against its sequence number, and prints
// "result JSON".
func roleTypedSubscriber(c *peer.Child) error {
	b, err := Open("mp", WithDir(os.Getenv("OFFQ_DIR")), WithName("typed-subscriber"))
	if err != nil {
		return err
	}
	defer b.Close()
	pattern := os.Getenv("OFFQ_PATTERN")
	want, _ := strconv.Atoi(os.Getenv("OFFQ_EXPECT"))
	opts := []SubscribeOption{WithOverflow(Block), WithQueueDepth(64)}
	res := subResult{Last: map[string]uint64{}}
	var last uint64
	note := func(seq uint64, err error) {
		res.Received++
		if err != nil {
			res.Errors = append(res.Errors, err.Error())
		} else if seq != last+1 {
			res.Errors = append(res.Errors, fmt.Sprintf("seq %d after %d", seq, last))
		}
		last = seq
	}
	var serr error
	var loop func()
	switch os.Getenv("OFFQ_CODEC") {
	case "struct":
		var s *TypedSubscription[reading]
		if s, serr = NewTypedSubscription(b, pattern, codec.NewStruct[reading](), opts...); serr == nil {
			loop = func() {
				for m, err := range s.Messages(c.Context()) {
					if err != nil {
						res.Errors = append(res.Errors, err.Error())
						return
					}
					v, err := m.View() // read in place
					if err == nil {
						err = v.check(m.Seq())
					}
					note(m.Seq(), err)
					if res.Received == want {
						return
					}
				}
			}
		}
	case "msgpack":
		var s *TypedSubscription[event]
		if s, serr = NewTypedSubscription(b, pattern, codec.NewMsgpack[event](), opts...); serr == nil {
			loop = func() {
				var e event
				for m, err := range s.Messages(c.Context()) {
					if err != nil {
						res.Errors = append(res.Errors, err.Error())
						return
					}
					if err = m.Decode(&e); err == nil {
						err = e.check(m.Seq())
					}
					note(m.Seq(), err)
					if res.Received == want {
						return
					}
				}
			}
		}
	case "raw":
		var s *TypedSubscription[[]byte]
		if s, serr = NewTypedSubscription(b, pattern, codec.Raw{}, opts...); serr == nil {
			loop = func() {
				var data []byte
				for m, err := range s.Messages(c.Context()) {
					if err != nil {
						res.Errors = append(res.Errors, err.Error())
						return
					}
					var seq uint64
					if err = m.Decode(&data); err == nil {
						_, seq, err = checkPayload(data)
					}
					note(seq, err)
					if res.Received == want {
						return
					}
				}
			}
		}
	default:
		return fmt.Errorf("codec %q", os.Getenv("OFFQ_CODEC"))
	}
	if serr != nil {
		c.Send("refused %v", serr)
		return nil
	}
	c.Send("ready")
	loop()
	res.Last["1"] = last
	j, _ := json.Marshal(res)
	c.Send("result %s", j)
	return nil
}

func startTyped(t *testing.T, role, dir, codecName, topic string, n int) (*peer.Proc, string) {
	t.Helper()
	env := []string{"OFFQ_DIR=" + dir, "OFFQ_CODEC=" + codecName, "OFFQ_COUNT=" + strconv.Itoa(n),
		"OFFQ_TOPIC=" + topic, "OFFQ_PATTERN=" + topic, "OFFQ_EXPECT=" + strconv.Itoa(n)}
	p := peer.Start(t, role, env...)
	l, err := p.ReadLine(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if l != "ready" && !strings.HasPrefix(l, "refused ") {
		t.Fatalf("%s wrote %q", role, l)
	}
	return p, l
}

// One publisher process and two subscriber processes (one by name, one by pattern) for each
// codec: every value arrives intact and in order, and no buffer is left in use.
func TestTypedMultiProcessRoundTrip(t *testing.T) {
	for _, cn := range []string{"struct", "msgpack", "raw"} {
		t.Run(cn, func(t *testing.T) {
			dir := t.TempDir()
			b, err := Open("mp", WithDir(dir), WithConfig(typedConfig()))
			if err != nil {
				t.Fatal(err)
			}
			const n = 2000
			exact, _ := startTyped(t, "typed-subscriber", dir, cn, "typed."+cn, n)
			wild, _ := startTyped(t, "typed-subscriber", dir, cn, "typed.>", n)
			pub, l := startTyped(t, "typed-publisher", dir, cn, "typed."+cn, n)
			if l != "ready" {
				t.Fatal(l)
			}
			pub.Send("go")
			if _, err := pub.Expect("done", 2*time.Minute); err != nil {
				t.Fatal(err)
			}
			for i, s := range []*peer.Proc{exact, wild} {
				r := readResult(t, s)
				if r.Received != n || r.Last["1"] != n || len(r.Errors) != 0 {
					t.Errorf("subscriber %d: received %d, last %v, errors %v", i, r.Received, r.Last, r.Errors)
				}
			}
			if err := pub.Wait(time.Minute); err != nil {
				t.Fatal(err)
			}
			// The topic records the codec for tools (offq sub --json decides by it).
			tp, err := b.p.LookupTopic("typed."+cn, false, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, name := tp.Fingerprint(); name != cn {
				t.Errorf("topic records codec %q, want %q", name, cn)
			}
			b.Close()
			assertClean(t, dir)
		})
	}
}

// A type recorded by one process refuses other types in every other process, on either side.
func TestTypedMultiProcessMismatch(t *testing.T) {
	dir := t.TempDir()
	b := openMP(t, dir)
	ctx := ctxT(t)

	// A child's struct publisher claims mm.x ...
	first, l := startTyped(t, "typed-publisher", dir, "struct", "mm.x", 0)
	if l != "ready" {
		t.Fatal(l)
	}
	// ... so this process may neither publish nor read another type there ...
	if _, err := NewTypedPublisher(b, "mm.x", codec.NewMsgpack[reading]()); !errors.Is(err, ErrTypeMismatch) {
		t.Errorf("msgpack publisher on a struct topic: %v", err)
	}
	if _, err := NewTypedSubscription(b, "mm.x", codec.NewStruct[otherReading]()); !errors.Is(err, ErrTypeMismatch) {
		t.Errorf("subscriber of another type: %v", err)
	}
	if _, err := NewTypedSubscription(b, "mm.x", codec.NewStruct[reading]()); err != nil {
		t.Errorf("subscriber of the same type: %v", err)
	}
	// ... and nor may other children.
	for _, c := range []struct{ role, codec string }{{"typed-subscriber", "msgpack"}, {"typed-publisher", "other"}, {"typed-publisher", "raw"}} {
		p, l := startTyped(t, c.role, dir, c.codec, "mm.x", 0)
		if !strings.HasPrefix(l, "refused ") || !strings.Contains(l, "type mismatch") || !strings.Contains(l, `carries codec "struct"`) {
			t.Errorf("%s %s: %q, want a type mismatch", c.role, c.codec, l)
		}
		if err := p.Wait(time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	first.Send("go")
	if _, err := first.Expect("done", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := first.Wait(time.Minute); err != nil {
		t.Fatal(err)
	}

	// A wildcard subscription made before the topics exist meets them at their first message.
	sub, err := NewTypedSubscription(b, "mz.*", codec.NewStruct[reading](), WithOverflow(Block))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := startTyped(t, "typed-publisher", dir, "other", "mz.other", 3)
	other.Send("go")
	if _, err := other.Expect("done", time.Minute); err != nil {
		t.Fatal(err)
	}
	good, _ := startTyped(t, "typed-publisher", dir, "struct", "mz.good", 2)
	good.Send("go")
	if _, err := good.Expect("done", time.Minute); err != nil {
		t.Fatal(err)
	}
	mismatches, received := 0, 0
	for received < 2 {
		m, err := sub.Receive(ctx)
		if errors.Is(err, ErrTypeMismatch) {
			mismatches++
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		v, err := m.View()
		if err != nil {
			t.Fatal(err)
		}
		if err := v.check(m.Seq()); err != nil {
			t.Fatal(err)
		}
		m.Release()
		received++
	}
	if mismatches != 3 {
		t.Fatalf("%d type mismatches, want 3", mismatches)
	}
	if n := inUse(b); n != 0 {
		t.Fatalf("%d buffers in use", n)
	}
}

func openMP(t *testing.T, dir string) *Bus {
	t.Helper()
	b, err := Open("mp", WithDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}
