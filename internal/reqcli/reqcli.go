// Package reqcli is the request/reply code shared by the offq CLI's req and reply commands
// (and usable by other tools): send one request and collect its reply; serve requests by
// running a command per request, with the request on its standard input and its standard
// output as the reply.
package reqcli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"
	"unicode/utf8"

	"github.com/offq/offq/bus"
)

// Reply is the outcome of one request, as `offq req --json` prints it.
type Reply struct {
	Topic string `json:"topic"`
	// Data is the reply as text if it is valid UTF-8; otherwise DataBase64 holds it.
	Data       string `json:"data,omitempty"`
	DataBase64 []byte `json:"data_base64,omitempty"`
	Bytes      int    `json:"bytes"`
	RTTNanos   int64  `json:"rtt_ns"`
}

// Request sends data on topic of b as a request and returns its reply (copied out of shared
// memory), waiting at most timeout. Errors wrap bus.ErrNoResponders, bus.ErrTimeout,
// bus.ErrResponderDied.
func Request(ctx context.Context, b *bus.Bus, topic string, data []byte, timeout time.Duration) (Reply, []byte, error) {
	p, err := b.Publisher(topic)
	if err != nil {
		return Reply{}, nil, err
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	m, err := p.Request(ctx, data)
	if err != nil {
		return Reply{}, nil, err
	}
	rtt := time.Since(start)
	out := m.Clone()
	m.Release()
	r := Reply{Topic: topic, Bytes: len(out), RTTNanos: rtt.Nanoseconds()}
	if utf8.Valid(out) {
		r.Data = string(out)
	} else {
		r.DataBase64 = out
	}
	return r, out, nil
}

// Served describes one request a Serve loop answered, as `offq reply --json` prints it.
type Served struct {
	Topic      string `json:"topic"`
	Request    string `json:"request"`
	Reply      string `json:"reply"`
	ExitStatus int    `json:"exit_status"`
	Error      string `json:"error,omitempty"`
	Nanos      int64  `json:"ns"`
}

// ServeOptions configures Serve.
type ServeOptions struct {
	Pattern string // the subscription's pattern
	Group   string // a queue group to join ("" none)
	Command string // run with sh -c per request; its stdout is the reply
	// Count stops Serve after that many requests (0: until ctx is done).
	Count int
	// Served, if set, is called after each request is answered.
	Served func(Served)
	// Ready, if set, is called once the subscription exists.
	Ready func()
}

// Serve answers the requests published on topics matching o.Pattern: for each, it runs
// o.Command with the request on its standard input and replies with what it writes on its
// standard output (also when it fails: the failure is reported to Served). Messages that are
// not requests are skipped. It returns nil when ctx is done or o.Count requests were served.
func Serve(ctx context.Context, b *bus.Bus, o ServeOptions) error {
	var opts []bus.SubscribeOption
	if o.Group != "" {
		opts = append(opts, bus.WithQueueGroup(o.Group))
	}
	s, err := b.Subscribe(o.Pattern, append(opts, bus.WithoutHistory())...)
	if err != nil {
		return err
	}
	defer s.Close()
	if o.Ready != nil {
		o.Ready()
	}
	served := 0
	for o.Count == 0 || served < o.Count {
		m, err := s.Receive(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if !m.IsRequest() {
			m.Release()
			continue
		}
		start := time.Now()
		req := m.Clone()
		out, code, cerr := RunCommand(ctx, o.Command, req)
		rerr := m.Respond(ctx, out)
		rec := Served{Topic: m.Topic(), Request: string(req), Reply: string(out), ExitStatus: code}
		m.Release()
		rec.Nanos = time.Since(start).Nanoseconds()
		if err := errors.Join(cerr, rerr); err != nil {
			rec.Error = err.Error()
		}
		served++
		if o.Served != nil {
			o.Served(rec)
		}
	}
	return nil
}

// commandWaitDelay bounds how long a finished command's children may keep its output open.
const commandWaitDelay = 100 * time.Millisecond

// RunCommand runs command with sh -c, stdin as its standard input, and returns its standard
// output and exit status; err is set when it could not run or exited with another status
// than 0.
func RunCommand(ctx context.Context, command string, stdin []byte) ([]byte, int, error) {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Stdin = bytes.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr // the command's complaints are the operator's to read
	// The shell exiting ends the request: a background child still holding its standard
	// output does not hold the reply (or every later request) back for more than this.
	cmd.WaitDelay = commandWaitDelay
	err := cmd.Run()
	if errors.Is(err, exec.ErrWaitDelay) {
		err = nil // the shell exited; what it wrote is the reply
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.Bytes(), ee.ExitCode(), fmt.Errorf("command exited with status %d", ee.ExitCode())
	}
	if err != nil {
		return out.Bytes(), -1, err
	}
	return out.Bytes(), 0, nil
}
