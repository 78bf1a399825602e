package main

// offq req: send one request and print its reply. offq reply: answer requests by running a
// command per request. The request/reply code is in internal/reqcli.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/internal/reqcli"
	"github.com/offq/offq/topics"
)

type reqOptions struct {
	data    string
	timeout time.Duration
	json    bool
	attach  attachFlags
}

func newReqCmd(a *app) *cobra.Command {
	var o reqOptions
	cmd := &cobra.Command{
		Use:   "req TOPIC",
		Short: "send a request on a topic and print the reply",
		Long: `req sends one request on TOPIC of the bus --bus and prints the first reply on standard
output, as it came (no newline is added). The request is --data, or standard input read to its
end. --json prints the reply as a JSON object instead: topic, data (or data_base64 when it is
not UTF-8), bytes and rtt_ns.

A reply that begins with a NUL byte, "offq-error" and a NUL byte is an error reply: the
responder could not send its reply (offq reply sends one when its command's output is larger
than the bus's largest buffer, or no buffer is free) and says why in the rest, which req
prints on standard error.

Exit status 0 when a reply came; 1 when no subscription matches TOPIC (no responders), when
no reply came within --timeout, when the responder died before replying or sent an error
reply, or when the request is larger than the bus's largest buffer; 2 for a bad flag.`,
		Example: `  offq req svc.time --data now
  echo '{"n": 2}' | offq req svc.square --timeout 2s --json`,
		Args: oneArg("TOPIC"),
		RunE: runtimeErrors(func(cmd *cobra.Command, args []string) error {
			if o.timeout <= 0 {
				return usageError(fmt.Errorf("--timeout %v: want more than 0", o.timeout))
			}
			if err := topics.ValidateName(args[0]); err != nil {
				return usageError(err)
			}
			return a.runReq(cmd, args[0], o)
		}),
	}
	f := cmd.Flags()
	f.StringVarP(&o.data, "data", "d", "", "the request (default: standard input)")
	f.DurationVar(&o.timeout, "timeout", 5*time.Second, "how long to wait for the reply")
	f.BoolVar(&o.json, "json", false, "print the reply as a JSON object")
	o.attach.register(f)
	return cmd
}

func (a *app) runReq(cmd *cobra.Command, topic string, o reqOptions) (err error) {
	b, err := a.openBus(&o.attach, "offq req")
	if err != nil {
		return fmt.Errorf("req: %w", err)
	}
	defer func() { err = errors.Join(err, b.Close()) }()
	data := []byte(o.data)
	if !cmd.Flags().Changed("data") {
		// No more than one byte past what a buffer holds: an endless stdin is refused, not read.
		if data, err = io.ReadAll(io.LimitReader(cmd.InOrStdin(), int64(b.MaxMessageSize())+1)); err != nil {
			return fmt.Errorf("req: reading the request: %w", err)
		}
	}
	if largest := b.MaxMessageSize(); len(data) > largest {
		size := fmt.Sprintf("%d bytes", len(data))
		if !cmd.Flags().Changed("data") {
			size = fmt.Sprintf("more than %d bytes", largest) // standard input is not read further
		}
		return fmt.Errorf("req: request too large: %s, largest buffer %v", size, bus.Size(largest))
	}
	r, raw, err := reqcli.Request(cmd.Context(), b, topic, data, o.timeout)
	if err != nil {
		return fmt.Errorf("req: %w", err)
	}
	if o.json {
		return json.NewEncoder(cmd.OutOrStdout()).Encode(r)
	}
	_, err = cmd.OutOrStdout().Write(raw)
	return err
}

type replyOptions struct {
	command string
	group   string
	count   int
	json    bool
	attach  attachFlags
}

func newReplyCmd(a *app) *cobra.Command {
	var o replyOptions
	cmd := &cobra.Command{
		Use:   "reply PATTERN",
		Short: "answer requests on topics matching a pattern by running a command",
		Long: `reply subscribes to PATTERN on the bus --bus (wildcards '*' and '>' as in offq sub) and
answers each request (offq req, Publisher.Request) by running --command with sh -c, the request
on its standard input; what the command writes on standard output is the reply, also when it
exits with another status (which is reported on standard error). Requests are answered one
at a time, in the order they come; messages that are not requests are skipped. Output larger
than the bus's largest buffer (or for which no buffer is free) cannot be sent: reply reports
it on standard error and answers with an error reply instead, a NUL byte, "offq-error", a NUL
byte and the reason ("reply too large: 5000000 bytes, largest buffer 1MiB"), which offq req
reports as a failure at once rather than waiting for its timeout. --queue joins a queue
group: several 'offq reply --queue NAME' share the requests, each answered by one of them.
--count stops after that many requests. --json prints a JSON line per request answered
(topic, request, reply, exit_status, error, ns; reply is empty when an error reply was sent)
on standard output.

reply runs until interrupted. Exit status 0 on interrupt or after --count requests, 1 on an
error, 2 for a bad flag.`,
		Example: `  offq reply 'svc.upper' --command 'tr a-z A-Z'
  offq reply 'svc.>' --command 'date -u' --queue time-servers --json`,
		Args: oneArg("PATTERN"),
		RunE: runtimeErrors(func(cmd *cobra.Command, args []string) error {
			if o.command == "" {
				return usageError(errors.New("--command is required"))
			}
			if o.count < 0 {
				return usageError(fmt.Errorf("--count %d: want 0 or more", o.count))
			}
			if err := topics.ValidatePattern(args[0]); err != nil {
				return usageError(err)
			}
			if o.group != "" {
				if err := bus.ValidateQueueGroup(o.group); err != nil {
					return usageError(err)
				}
			}
			return a.runReply(cmd, args[0], o)
		}),
	}
	f := cmd.Flags()
	f.StringVarP(&o.command, "command", "c", "", "command run with sh -c per request: the request on its stdin, the reply from its stdout")
	f.StringVar(&o.group, "queue", "", "join this queue group (requests are shared among its members)")
	f.IntVarP(&o.count, "count", "n", 0, "stop after answering this many requests (0: until interrupted)")
	f.BoolVar(&o.json, "json", false, "print a JSON line per request answered")
	o.attach.register(f)
	return cmd
}

func (a *app) runReply(cmd *cobra.Command, pattern string, o replyOptions) (err error) {
	b, err := a.openBus(&o.attach, "offq reply")
	if err != nil {
		return fmt.Errorf("reply: %w", err)
	}
	defer func() { err = errors.Join(err, b.Close()) }()
	enc := json.NewEncoder(cmd.OutOrStdout())
	err = reqcli.Serve(cmd.Context(), b, reqcli.ServeOptions{
		Pattern: pattern, Group: o.group, Command: o.command, Count: o.count,
		Ready: func() { fmt.Fprintf(a.stderr, "offq reply: answering requests on %s\n", pattern) },
		Served: func(s reqcli.Served) {
			if s.Error != "" {
				fmt.Fprintf(a.stderr, "offq reply: request on %s: %s\n", s.Topic, s.Error)
			}
			if o.json {
				enc.Encode(s)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("reply: %w", err)
	}
	return nil
}
