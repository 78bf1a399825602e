package metrics

import (
	"net/http"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/offq/offq/bus"
)

// Register registers with reg a Collector over the bus b is attached to, and returns it. The
// Collector maps the bus's region again, read-only, and finds it by name, so closing b is
// safe at any time: the bus is exported for as long as its region exists, whoever keeps it.
// Unregister the Collector and Close it to drop the mapping.
//
//	c, err := metrics.Register(prometheus.DefaultRegisterer, b)
//	...
//	defer c.Close()
func Register(reg prometheus.Registerer, b *bus.Bus) (*Collector, error) {
	c := NewCollector(Options{
		Dir: filepath.Dir(b.Path()), Bus: b.Name(),
		// b attached to this very file, so its owner is already trusted.
		AllowForeignOwner: true,
	})
	if err := reg.Register(c); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Handler returns an http.Handler serving, in the Prometheus text format, c's metrics, the Go
// runtime's (go_*) and this process's (process_*), and the handler's own request counts
// (promhttp_metric_handler_*), as promhttp.Handler does for the default registry. It is what offq exporter serves at /metrics; mount it in a service that
// has no Prometheus registry of its own. A failure to collect is logged to log (nil: not
// logged) and the rest of the metrics are served.
func Handler(c *Collector, log *zap.Logger) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	opts := promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}
	if log != nil {
		opts.ErrorLog = zap.NewStdLog(log)
	}
	return promhttp.InstrumentMetricHandler(reg, promhttp.HandlerFor(reg, opts))
}
