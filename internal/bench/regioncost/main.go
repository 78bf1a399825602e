// Command regioncost measures what a bus costs a process as a function of the region's size:
// the time from bus.Open on an existing region to the first message published (attach +
// publish), and the CPU an idle subscriber process burns (user + system time over an idle
// window, as a percentage of one core). docs/performance.md ("Cost that does not grow with the
// region") reports its figures; run.sh builds it at a git ref and runs it.
//
// It uses package bus only, so the same file builds against older commits.
//
//	regioncost [-sizes 8MiB,256MiB,1GiB] [-reps 5] [-idle 10s] [-dir /dev/shm]
//
// For each size the parent creates the region (reported, not part of the figures), stays
// attached with one subscription (reaping off, so that it adds no work of its own), then runs,
// one at a time, reps children that attach and publish one message, and reps children that
// attach, subscribe and stay idle for the idle window. The region is removed afterwards.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/offq/offq/bus"
)

// result is what a child prints on its last line.
type result struct {
	OpenMs    float64 `json:"open_ms"`    // bus.Open
	PublishMs float64 `json:"publish_ms"` // Publisher + Publish of one message
	CloseMs   float64 `json:"close_ms"`   // Close
	CPUPct    float64 `json:"cpu_pct"`    // idle child: user+sys over the idle window, % of a core
}

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "attach" || os.Args[1] == "idle") {
		if err := child(os.Args[1], os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "regioncost:", err)
			os.Exit(1)
		}
		return
	}
	sizes := flag.String("sizes", "8MiB,256MiB,1GiB", "region sizes, comma-separated")
	reps := flag.Int("reps", 5, "children of each kind per size")
	idle := flag.Duration("idle", 10*time.Second, "idle window of an idle child")
	dir := flag.String("dir", "/dev/shm", "directory of the regions")
	flag.Parse()
	if err := parent(strings.Split(*sizes, ","), *reps, *idle, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "regioncost:", err)
		os.Exit(1)
	}
}

// config returns the configuration of a region of about size bytes: the default one for 8 MiB
// and less, else the default tables with two classes, 256 B and 4 KiB, sharing the bytes (the
// 256 B class capped at the largest class count).
func config(size uint64) bus.Config {
	c := bus.DefaultConfig()
	if size <= 8<<20 {
		return c
	}
	n256 := min(size/2/(64+256), 1<<20)
	n4k := (size - n256*(64+256)) / (64 + 4096)
	c.Classes = []bus.Class{{Size: 256, Count: uint32(n256)}, {Size: 4096, Count: uint32(n4k)}}
	return c
}

func parent(sizes []string, reps int, idle time.Duration, dir string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	fmt.Printf("| region | file | create | attach+publish (median, min–max) | open | publish | close | idle CPU per process (median, min–max) |\n")
	fmt.Printf("|---|---|---|---|---|---|---|---|\n")
	for _, s := range sizes {
		sz, err := parseSize(strings.TrimSpace(s))
		if err != nil {
			return err
		}
		if err := measure(exe, dir, sz, reps, idle); err != nil {
			return fmt.Errorf("%v: %w", sz, err)
		}
	}
	return nil
}

func measure(exe, dir string, sz bus.Size, reps int, idle time.Duration) error {
	name := fmt.Sprintf("regioncost-%d-%d", uint64(sz), os.Getpid())
	cfg := config(uint64(sz))
	defer os.Remove(filepath.Join(dir, name))
	t0 := time.Now()
	b, err := bus.Open(name, bus.WithDir(dir), bus.WithConfig(cfg), bus.WithReapInterval(0), bus.WithName("holder"))
	if err != nil {
		return err
	}
	create := time.Since(t0)
	defer b.Close()
	sub, err := b.Subscribe("t", bus.WithQueueDepth(16))
	if err != nil {
		return err
	}
	defer sub.Close()
	fi, err := os.Stat(filepath.Join(dir, name))
	if err != nil {
		return err
	}
	cfgJSON, _ := json.Marshal(cfg)
	var total, open, pub, cls, cpu []float64
	for range reps {
		r, err := run(exe, "attach", dir, name, string(cfgJSON), idle)
		if err != nil {
			return err
		}
		total = append(total, r.OpenMs+r.PublishMs)
		open, pub, cls = append(open, r.OpenMs), append(pub, r.PublishMs), append(cls, r.CloseMs)
		// Take the message, so that the queue never fills.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		m, err := sub.Receive(ctx)
		cancel()
		if err != nil {
			return fmt.Errorf("receive: %w", err)
		}
		m.Release()
	}
	for range reps {
		r, err := run(exe, "idle", dir, name, string(cfgJSON), idle)
		if err != nil {
			return err
		}
		cpu = append(cpu, r.CPUPct)
	}
	fmt.Printf("| %v | %.0f MB | %s | %s ms | %s ms | %s ms | %s ms | %s %% |\n", sz, float64(fi.Size())/1e6,
		create.Round(time.Millisecond), spread(total), med(open), med(pub), med(cls), spread(cpu))
	return nil
}

func run(exe, role, dir, name, cfg string, idle time.Duration) (result, error) {
	cmd := exec.Command(exe, role, dir, name, cfg, idle.String())
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return result{}, err
	}
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	var r result
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return r, fmt.Errorf("%s child: %q: %w", role, sc.Text(), err)
		}
	}
	if err := cmd.Wait(); err != nil {
		return r, fmt.Errorf("%s child: %w", role, err)
	}
	return r, nil
}

func child(role string, args []string) error {
	if len(args) != 4 {
		return fmt.Errorf("%s: want dir name config idle", role)
	}
	dir, name := args[0], args[1]
	var cfg bus.Config
	if err := json.Unmarshal([]byte(args[2]), &cfg); err != nil {
		return err
	}
	idle, err := time.ParseDuration(args[3])
	if err != nil {
		return err
	}
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	var r result
	t0 := time.Now()
	b, err := bus.Open(name, bus.WithDir(dir), bus.WithConfig(cfg), bus.WithName(role))
	if err != nil {
		return err
	}
	r.OpenMs = ms(time.Since(t0))
	switch role {
	case "attach":
		t1 := time.Now()
		p, err := b.Publisher("t")
		if err != nil {
			return err
		}
		if err := p.Publish(context.Background(), []byte("hello")); err != nil {
			return err
		}
		r.PublishMs = ms(time.Since(t1))
	case "idle":
		if _, err := b.Subscribe("idle"); err != nil {
			return err
		}
		c0, w0 := cpuTime(), time.Now()
		time.Sleep(idle) // the measurement: what the process does when nothing happens
		r.CPUPct = 100 * float64(cpuTime()-c0) / float64(time.Since(w0))
	}
	t2 := time.Now()
	if err := b.Close(); err != nil {
		return err
	}
	r.CloseMs = ms(time.Since(t2))
	return json.NewEncoder(os.Stdout).Encode(r)
}

// parseSize reads "8MiB", "256MiB", "1GiB" (a number with a binary unit).
func parseSize(s string) (bus.Size, error) {
	var n uint64
	var unit string
	if _, err := fmt.Sscanf(s, "%d%s", &n, &unit); err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	switch unit {
	case "KiB":
		n <<= 10
	case "MiB":
		n <<= 20
	case "GiB":
		n <<= 30
	default:
		return 0, fmt.Errorf("size %q: want KiB, MiB or GiB", s)
	}
	return bus.Size(n), nil
}

// cpuTime is the process's user + system time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func med(v []float64) string {
	s := slices.Clone(v)
	slices.Sort(s)
	return num(s[len(s)/2])
}

func spread(v []float64) string {
	s := slices.Clone(v)
	slices.Sort(s)
	return fmt.Sprintf("%s (%s–%s)", num(s[len(s)/2]), num(s[0]), num(s[len(s)-1]))
}

func num(f float64) string {
	switch {
	case f >= 100:
		return fmt.Sprintf("%.0f", f)
	case f >= 10:
		return fmt.Sprintf("%.1f", f)
	}
	return fmt.Sprintf("%.2f", f)
}
