// Package reqcli is the request/reply code shared by the offq CLI's req and reply commands
// (and usable by other tools): send one request and collect its reply; serve requests by
// running a command per request, with the request on its standard input and its standard
// output as the reply.
//
// # Error replies
//
// A reply has no status. A responder that cannot send the reply it means to (larger than the
// bus's largest buffer, or no buffer free) would otherwise send nothing, and its requester
// would wait for its whole timeout. Serve answers such a request with the bus's error reply
// instead (bus.Message.RespondError: bus.ErrorReplyPrefix, a NUL byte, "offq-error" and a NUL
// byte, followed by the reason, at most bus.MaxErrorReason bytes: "reply too large: 5000000
// bytes, largest buffer 1MiB"). Every bus requester, Request here included, fails on it with
// a *ResponderError. An ordinary reply that begins with those twelve bytes is read as an error
// reply too: a command's output does not begin with a NUL byte and "offq-error" by accident.
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

// ResponderError is the error of a request whose responder answered with an error reply.
type ResponderError = bus.ResponderError

// Request sends data on topic of b as a request and returns its reply (copied out of shared
// memory), waiting at most timeout. Errors wrap bus.ErrNoResponders, bus.ErrTimeout,
// bus.ErrResponderDied; an error reply (see the package documentation) is a *ResponderError.
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
	Reply      string `json:"reply"` // what the command wrote; "" when an error reply was sent instead
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
// standard output (also when it fails: the failure is reported to Served). Output that cannot
// be sent (larger than the bus's largest buffer, or no buffer free) is answered with an error
// reply (see the package documentation), reported to Served with an empty Reply. Messages
// that are not requests are skipped. It returns nil when ctx is done or o.Count requests were served.
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
	largest := b.MaxMessageSize()
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
		// No more than a buffer holds is kept: a command that writes gigabytes is counted,
		// not held in memory, and answered with an error reply.
		out, size, code, cerr := RunCommand(ctx, o.Command, req, largest)
		rec := Served{Topic: m.Topic(), Request: string(req), Reply: string(out), ExitStatus: code}
		failed, rerr := respond(ctx, m, out, size, largest)
		if failed {
			rec.Reply = ""
		}
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

// respond answers the request m with out, the command's output (size bytes, of which out
// holds the first ones). When it cannot be sent (larger than the bus's
// largest buffer, largest; or no buffer free for it), it answers with an error reply saying
// why instead, so that the requester fails at once rather than at its timeout, and returns
// failed and an error that says what was wrong.
func respond(ctx context.Context, m bus.Message, out []byte, size int64, largest int) (failed bool, err error) {
	var why error
	if size > int64(largest) {
		why = fmt.Errorf("reply too large: %d bytes, largest buffer %v", size, bus.Size(largest))
	} else if err := m.Respond(ctx, out); errors.Is(err, bus.ErrPoolExhausted) || errors.Is(err, bus.ErrTooLarge) {
		why = fmt.Errorf("reply not sent: %w", err)
	} else {
		return false, err
	}
	if err := m.RespondError(ctx, why.Error()); err != nil {
		return true, fmt.Errorf("%w; the error reply was not sent either: %w", why, err)
	}
	return true, fmt.Errorf("%w (the requester was sent an error reply)", why)
}

// commandWaitDelay bounds how long a finished command's children may keep its output open.
const commandWaitDelay = 100 * time.Millisecond

// RunCommand runs command with sh -c, stdin as its standard input, and returns its standard
// output and exit status; err is set when it could not run or exited with another status
// than 0. It keeps no more than limit bytes of the output (limit < 0: all of it) and reads
// the rest to its end, counting it: size is how many bytes the command wrote in all.
func RunCommand(ctx context.Context, command string, stdin []byte, limit int) (out []byte, size int64, code int, err error) {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Stdin = bytes.NewReader(stdin)
	w := &capWriter{limit: limit}
	cmd.Stdout = w
	cmd.Stderr = os.Stderr // the command's complaints are the operator's to read
	// The shell exiting ends the request: a background child still holding its standard
	// output does not hold the reply (or every later request) back for more than this.
	cmd.WaitDelay = commandWaitDelay
	err = cmd.Run()
	if errors.Is(err, exec.ErrWaitDelay) {
		err = nil // the shell exited; what it wrote is the reply
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return w.buf.Bytes(), w.size, ee.ExitCode(), fmt.Errorf("command exited with status %d", ee.ExitCode())
	}
	if err != nil {
		return w.buf.Bytes(), w.size, -1, err
	}
	return w.buf.Bytes(), w.size, 0, nil
}

// capWriter keeps the first limit bytes written to it (all if limit < 0) and counts them all.
type capWriter struct {
	buf   bytes.Buffer
	limit int
	size  int64
}

func (w *capWriter) Write(p []byte) (int, error) {
	w.size += int64(len(p))
	if keep := w.limit - w.buf.Len(); w.limit < 0 || keep >= len(p) {
		w.buf.Write(p)
	} else if keep > 0 {
		w.buf.Write(p[:keep])
	}
	return len(p), nil
}
