package main

// offq exporter: serves the counters of every bus in --dir (or of --bus) to Prometheus at
// /metrics, through package metrics.

import (
	"context"
	"errors"
	"fmt"
	"html"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/offq/offq/metrics"
)

// exporterShutdown bounds how long the exporter waits for scrapes under way when it stops.
const exporterShutdown = 5 * time.Second

func newExporterCmd(a *app) *cobra.Command {
	var (
		listen  string
		foreign bool
	)
	cmd := &cobra.Command{
		Use:   "exporter",
		Short: "serve the buses' counters to Prometheus at /metrics",
		Long: `exporter serves, at http://LISTEN/metrics, the counters of every bus in --dir (or only of the
one --bus names) in the Prometheus text format: queue depths, drops, pool occupancy, publish
and delivery rates, participants and reclaims (docs/metrics.md lists every metric; a Grafana
dashboard is in docs/grafana/offq.json). Go runtime and process metrics of the exporter
itself are served too.

At every scrape it lists --dir again: buses created since are exported, removed ones are
dropped (and unmapped), a bus re-created under an old name is read afresh. It maps each
region read-only and never attaches to a bus, so it needs no participant slot, changes
nothing and costs the buses' processes nothing but the cache lines it reads.

Regions owned by another user are skipped unless --allow-foreign-owner is given (run the
exporter as the buses' user, or in their group with regions of mode 0660 and that flag).
It runs until interrupted (SIGINT, SIGTERM), and prints the address it serves on first.`,
		Example: "  offq exporter\n  offq exporter --listen 127.0.0.1:9464 --bus plant",
		Args:    noArgs,
		RunE: runtimeErrors(func(cmd *cobra.Command, _ []string) error {
			return a.runExporter(cmd, listen, foreign)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", ":9464", "address to serve HTTP on")
	f.BoolVar(&foreign, "allow-foreign-owner", false, "export regions owned by other users too (they are only read)")
	return cmd
}

func (a *app) runExporter(cmd *cobra.Command, listen string, foreign bool) error {
	ctx := cmd.Context()
	opts := metrics.Options{Dir: a.dir, AllowForeignOwner: foreign, Logger: a.log}
	what := "every bus in " + a.dir
	if cmd.Flags().Changed("bus") {
		opts.Bus = a.busName
		what = fmt.Sprintf("bus %s in %s", a.busName, a.dir)
	}
	c := metrics.NewCollector(opts)
	defer c.Close()

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("exporter: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler(c, a.log))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, "<!DOCTYPE html>\n<title>offq exporter</title>\n<h1>offq exporter</h1>\n<p>Serving %s.</p>\n<p><a href=\"/metrics\">Metrics</a></p>\n",
			html.EscapeString(what))
	})
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          zap.NewStdLog(a.log),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	fmt.Fprintf(cmd.OutOrStdout(), "offq exporter: serving %s at http://%s/metrics\n", what, ln.Addr())
	a.log.Info("exporter: serving", zap.String("addr", ln.Addr().String()), zap.String("dir", a.dir), zap.String("bus", opts.Bus))

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("exporter: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), exporterShutdown)
	defer cancel()
	err = srv.Shutdown(sctx)
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return fmt.Errorf("exporter: stop: %w", err)
	}
	return nil
}
