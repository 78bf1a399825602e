package metrics

import (
	"errors"
	"io/fs"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/offq/offq/transport"
)

// Options configure NewCollector.
type Options struct {
	// Dir is the directory holding the regions. Default transport.DefaultDir.
	Dir string
	// Bus names the one bus to export. Empty: every region in Dir.
	Bus string
	// AllowForeignOwner exports regions owned by other users too (see
	// transport.Options.AllowForeignOwner). They are mapped read-only, so nothing the
	// collector does can change them; the risk is only in trusting their numbers.
	AllowForeignOwner bool
	// Logger receives a warning when a region cannot be opened (once per region and error).
	// Default: no logging.
	Logger *zap.Logger
}

// NewCollector returns a Collector over the regions in opts.Dir, or over the one named
// opts.Bus. At each scrape it lists the directory again, maps new regions read-only (it never
// attaches as a participant), and unmaps those whose file was removed or replaced, so it
// follows buses that come and go. A region's memory stays mapped by the Collector until the
// first scrape after its file is removed, or until Close.
//
// Besides the regions' metrics it serves offq_collector_regions and
// offq_collector_open_failures_total.
func NewCollector(opts Options) *Collector {
	if opts.Dir == "" {
		opts.Dir = transport.DefaultDir
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	return &Collector{src: &dirSource{opts: opts, open: make(map[string]*openRegion), warned: make(map[string]string)}}
}

// dirSource maps the regions of a directory, read-only, and keeps them mapped between
// scrapes.
type dirSource struct {
	opts Options

	mu        sync.Mutex // serialises scrapes and Close: a region is never unmapped under Stats
	open      map[string]*openRegion
	warned    map[string]string // name -> last error logged
	openFails uint64
	closed    bool
}

// openRegion is a region the collector has mapped, and the file it mapped.
type openRegion struct {
	r  *transport.Region
	fi os.FileInfo
}

// openTimeout bounds how long a scrape waits for a region still being initialised.
const openTimeout = 100 * time.Millisecond

func (d *dirSource) describesCollector() bool { return true }

func (d *dirSource) snapshots() ([]transport.Stats, []prometheus.Metric) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []transport.Stats
	var failures []prometheus.Metric
	if !d.closed {
		names := d.names()
		present := make(map[string]bool, len(names))
		for _, name := range names {
			present[name] = true
			if o := d.region(name); o != nil {
				st, err := o.r.Stats()
				if err != nil {
					// Its file was truncated under the mapping: drop the mapping, and open
					// the file again (and validate it) at the next scrape.
					d.drop(name, o)
					failures = append(failures, failed(name, err))
					continue
				}
				out = append(out, st)
			}
		}
		for name, o := range d.open {
			if !present[name] {
				d.drop(name, o)
			}
		}
		for name := range d.warned {
			if name != "" && !present[name] {
				delete(d.warned, name)
			}
		}
	}
	own := append(failures,
		prometheus.MustNewConstMetric(mCollectorRegions.desc, mCollectorRegions.typ, float64(len(out))),
		prometheus.MustNewConstMetric(mCollectorOpenFails.desc, mCollectorOpenFails.typ, float64(d.openFails)),
		prometheus.MustNewConstMetric(mBuildInfo.desc, mBuildInfo.typ, 1, buildInfo[0], buildInfo[1]),
	)
	return out, own
}

// names lists the regions to export now.
func (d *dirSource) names() []string {
	if d.opts.Bus != "" {
		if _, err := os.Stat(transport.Path(d.opts.Dir, d.opts.Bus)); err != nil {
			return nil
		}
		return []string{d.opts.Bus}
	}
	names, err := transport.List(d.opts.Dir)
	if err != nil {
		d.warn("", err)
		return nil
	}
	delete(d.warned, "")
	return names
}

// region returns the mapping of region name, opening it if it is new or its file changed,
// or nil if it cannot be opened now.
func (d *dirSource) region(name string) *openRegion {
	path := transport.Path(d.opts.Dir, name)
	fi, err := os.Stat(path)
	if err != nil {
		if o := d.open[name]; o != nil {
			d.drop(name, o)
		}
		return nil
	}
	if o := d.open[name]; o != nil {
		if os.SameFile(o.fi, fi) {
			return o
		}
		d.drop(name, o) // removed and re-created: a new bus under the old name
	}
	r, err := transport.Open(name, transport.Options{Dir: d.opts.Dir, ReadOnly: true,
		AllowForeignOwner: d.opts.AllowForeignOwner, ReadyTimeout: openTimeout})
	if err != nil {
		if errors.Is(err, transport.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			return nil // removed since it was listed
		}
		d.openFails++
		d.warn(name, err)
		return nil
	}
	// The file may have been replaced between the Stat and the Open: then this mapping is of
	// a file that Stat did not describe. Try again at the next scrape.
	if fi2, err := os.Stat(path); err != nil || !os.SameFile(fi, fi2) {
		r.Close()
		return nil
	}
	delete(d.warned, name)
	o := &openRegion{r: r, fi: fi}
	d.open[name] = o
	return o
}

func (d *dirSource) drop(name string, o *openRegion) {
	o.r.Close()
	delete(d.open, name)
}

// warn logs err for region name (or the directory, ""), unless it was the last thing logged
// for it.
func (d *dirSource) warn(name string, err error) {
	if d.warned[name] == err.Error() {
		return
	}
	d.warned[name] = err.Error()
	if name == "" {
		d.opts.Logger.Warn("metrics: cannot list regions", zap.String("dir", d.opts.Dir), zap.Error(err))
		return
	}
	d.opts.Logger.Warn("metrics: cannot open region", zap.String("dir", d.opts.Dir), zap.String("bus", name), zap.Error(err))
}

func (d *dirSource) close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	var errs []error
	for name, o := range d.open {
		errs = append(errs, o.r.Close())
		delete(d.open, name)
	}
	return errors.Join(errs...)
}
