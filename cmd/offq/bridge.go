package main

// offq bridge: connect the bus to NATS, exporting local topics and importing NATS subjects.

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/offq/offq/bridge"
	"github.com/offq/offq/bus"
	"github.com/offq/offq/metrics"
	"github.com/offq/offq/topics"
)

type bridgeOptions struct {
	url        string
	exports    []string
	imports    []string
	creds      string
	tlsCert    string
	tlsKey     string
	tlsCA      string
	id         string
	queueDepth int
	reqTimeout time.Duration
	every      time.Duration
	listen     string
	attach     attachFlags
}

func newBridgeCmd(a *app) *cobra.Command {
	var o bridgeOptions
	cmd := &cobra.Command{
		Use:   "bridge",
		Short: "bridge the bus's topics to and from NATS, across hosts",
		Long: `bridge connects the bus --bus to NATS. Local topics matching an --export pattern are
published to the NATS subjects of the same names; NATS subjects matching an --import pattern
are published on the local bus. The payload travels unchanged; the topic's codec, type
fingerprint and type name travel in NATS headers (Offq-Codec, Offq-Fingerprint, Offq-Type), and
the origin's publish time (Offq-Time) becomes the imported message's time, so typed subscribers on one
host read what typed publishers on another wrote, and a message of another type than the local
topic's is refused and counted. A message the bridge imported is never exported back
(docs/distributed.md).

Delivery is at most once: a slow or absent NATS never blocks local publishers (the bridge's
local queue drops its oldest messages), and the bridge keeps running across disconnections,
counting what it could not forward. It says on stderr when it is bridging, prints its counters
every --stats-interval (0: never) and at exit, and runs until interrupted (SIGINT, SIGTERM).`,
		Example: `  offq bridge --export 'sensors.>' --import 'commands.>'
  offq bridge --nats-url nats://nats-1:4222,nats://nats-2:4222 --export 'orders.>' \
      --creds /etc/offq/bridge.creds --tls-ca /etc/offq/ca.pem`,
		Args: noArgs,
		RunE: runtimeErrors(func(cmd *cobra.Command, _ []string) error {
			nopts, err := o.natsOptions()
			if err != nil {
				return usageError(err)
			}
			return a.runBridge(cmd, &o, nopts)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&o.url, "nats-url", nats.DefaultURL, "NATS server URL(s), comma-separated")
	f.StringArrayVar(&o.exports, "export", nil, "forward local topics matching `PATTERN` to NATS (repeatable)")
	f.StringArrayVar(&o.imports, "import", nil, "publish NATS subjects matching `PATTERN` on the bus (repeatable)")
	f.StringVar(&o.creds, "creds", "", "NATS credentials `file` (JWT and NKey seed)")
	f.StringVar(&o.tlsCert, "tls-cert", "", "client certificate `file` for TLS (with --tls-key)")
	f.StringVar(&o.tlsKey, "tls-key", "", "client key `file` for TLS (with --tls-cert)")
	f.StringVar(&o.tlsCA, "tls-ca", "", "CA certificate `file` to verify the NATS server")
	f.StringVar(&o.id, "id", "", "bridge instance id: the Offq-Origin header and the bridge label of its metrics (default: random)")
	f.IntVar(&o.queueDepth, "queue-depth", 0, "queue depth of the local export subscriptions (default: the bus's inbox capacity)")
	f.DurationVar(&o.reqTimeout, "request-timeout", 10*time.Second, "how long the bridge waits for the reply to a request it carries, either way")
	f.DurationVar(&o.every, "stats-interval", 0, "print the counters this often (0: only at exit)")
	f.StringVar(&o.listen, "listen", "", "serve Prometheus metrics (the bridge's and its bus's) at http://`ADDR`/metrics")
	o.attach.register(f)
	return cmd
}

// natsOptions checks the flags and maps the credential and TLS ones to nats options.
func (o *bridgeOptions) natsOptions() ([]nats.Option, error) {
	if len(o.exports) == 0 && len(o.imports) == 0 {
		return nil, errors.New("bridge: give at least one --export or --import")
	}
	for _, p := range append(append([]string(nil), o.exports...), o.imports...) {
		if err := topics.ValidatePattern(p); err != nil {
			return nil, fmt.Errorf("bridge: %w", err)
		}
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return nil, errors.New("bridge: --tls-cert and --tls-key go together")
	}
	if o.queueDepth < 0 || o.every < 0 {
		return nil, errors.New("bridge: negative --queue-depth or --stats-interval")
	}
	if o.reqTimeout <= 0 {
		return nil, fmt.Errorf("bridge: --request-timeout %v: want more than 0", o.reqTimeout)
	}
	var opts []nats.Option
	if o.creds != "" {
		opts = append(opts, nats.UserCredentials(o.creds))
	}
	if o.tlsCert != "" {
		opts = append(opts, nats.ClientCert(o.tlsCert, o.tlsKey))
	}
	if o.tlsCA != "" {
		opts = append(opts, nats.RootCAs(o.tlsCA))
	}
	return opts, nil
}

func (a *app) runBridge(cmd *cobra.Command, o *bridgeOptions, nopts []nats.Option) error {
	ctx := cmd.Context()
	b, err := a.openBus(&o.attach, "offq-bridge")
	if err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	defer b.Close()
	opts := []bridge.Option{bridge.WithLogger(a.log), bridge.WithNATSOptions(nopts...), bridge.WithQueueDepth(o.queueDepth),
		bridge.WithRequestTimeout(o.reqTimeout)}
	if o.id != "" {
		opts = append(opts, bridge.WithID(o.id))
	}
	for _, p := range o.exports {
		opts = append(opts, bridge.WithExport(p))
	}
	for _, p := range o.imports {
		opts = append(opts, bridge.WithImport(p))
	}
	br, err := bridge.New(b, o.url, opts...)
	if err != nil {
		return err
	}
	defer func() {
		br.Close()
		printBridgeStats(a, br.Stats())
	}()
	fmt.Fprintf(a.stderr, "offq bridge: bridging bus %s and %s as %s (export %q, import %q)\n",
		a.busName, br.Conn().ConnectedUrlRedacted(), br.ID(), o.exports, o.imports)
	if o.listen != "" {
		stop, addr, err := serveBridgeMetrics(a, o.listen, b)
		if err != nil {
			return err
		}
		defer stop()
		fmt.Fprintf(a.stderr, "offq bridge: metrics at http://%s/metrics\n", addr)
	}
	var tick <-chan time.Time
	if o.every > 0 {
		t := time.NewTicker(o.every)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
			printBridgeStats(a, br.Stats())
		}
	}
}

func printBridgeStats(a *app, s bridge.Stats) {
	fmt.Fprintf(a.stderr, "offq bridge: forwarded %d, imported %d, dropped %d, mismatched %d, looped %d, gaps %d, pending %d, disconnects %d, reconnects %d, connected %t\n",
		s.Forwarded, s.Imported, s.Dropped, s.Mismatched, s.Looped, s.Gaps, s.Pending, s.Disconnects, s.Reconnects, s.Connected)
}

// serveBridgeMetrics serves, at addr, the bridge's counters beside its bus's metrics: one scrape
// target per bridge process, with the same names offq exporter uses for the bus.
func serveBridgeMetrics(a *app, addr string, b *bus.Bus) (stop func(), bound string, err error) {
	c := metrics.NewCollector(metrics.Options{Dir: filepath.Dir(b.Path()), Bus: b.Name(), AllowForeignOwner: true})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		c.Close()
		return nil, "", fmt.Errorf("bridge: --listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics.Handler(c, a.log))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return func() {
		srv.Close()
		c.Close()
	}, ln.Addr().String(), nil
}
