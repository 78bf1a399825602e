package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/offq/offq/internal/peer"
)

// roleCLI runs the offq command line in its argument, as offq's main does.
func roleCLI(c *peer.Child) error {
	var args []string
	if err := c.Arg(&args); err != nil {
		return err
	}
	os.Exit(run(context.Background(), args, os.Stdout, os.Stderr))
	return nil
}

// TestKilledParent runs offq demo and offq bench in a process of their own, kills that
// process with SIGKILL once its children run, and checks that the children are gone within
// a bounded time: nothing of a demo or a bench outlives it, however it ends.
func TestKilledParent(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		ready func(stdout, stderr string) bool // the children are running
	}{
		{"demo", []string{"demo", "--duration", "1m", "--rate", "1000", "--subscribers", "1"},
			func(stdout, _ string) bool { return strings.Contains(stdout, "|") }}, // a live line
		{"bench", []string{"--log-level", "debug", "bench", "--systems", "offq", "--patterns", "fanout", "--fanout", "3",
			"--sizes", "64", "--warmup", "1m", "--no-pin"},
			func(_, stderr string) bool { return strings.Count(stderr, "bench: started") == 3 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var stdout, stderr bytes.Buffer
			changed := make(chan struct{}, 1)
			note := func(b *bytes.Buffer, s string) {
				mu.Lock()
				b.WriteString(s)
				mu.Unlock()
				select {
				case changed <- struct{}{}:
				default:
				}
			}
			p, err := peer.Launch(peer.Spec{Role: "offq-cli", Name: "offq " + tc.name,
				Arg:    append([]string{"--dir", t.TempDir()}, tc.args...),
				OnLine: func(l string) { note(&stdout, l+"\n") },
				Stderr: writerFunc(func(b []byte) { note(&stderr, string(b)) })})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				p.Kill()
				<-p.Exited()
				if t.Failed() {
					t.Logf("stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
				}
			}()
			timeout := time.After(time.Minute)
			for {
				mu.Lock()
				ok := tc.ready(stdout.String(), stderr.String())
				mu.Unlock()
				if ok {
					break
				}
				select {
				case <-changed:
				case <-p.Exited():
					t.Fatalf("offq %s exited: %v", tc.name, p.Err())
				case <-timeout:
					t.Fatal("children not running within a minute")
				}
			}
			kids := childrenOf(t, p.Pid())
			if len(kids) < 3 {
				t.Fatalf("children of %d: %v, want at least 3", p.Pid(), kids)
			}
			var fds []int
			for _, pid := range kids {
				fd, err := unix.PidfdOpen(pid, 0)
				if err != nil {
					t.Fatalf("pidfd_open %d: %v", pid, err)
				}
				defer unix.Close(fd)
				fds = append(fds, fd)
			}
			p.Kill()
			const bound = 10 * time.Second
			start := time.Now()
			for i, fd := range fds {
				// A pidfd polls readable once its process has exited.
				pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
				for {
					n, err := unix.Poll(pfd, int(max(0, bound-time.Since(start)).Milliseconds()))
					if err == unix.EINTR {
						continue
					}
					if err != nil || n == 0 {
						t.Fatalf("child %d still running %v after its parent was killed (%v)", kids[i], bound, err)
					}
					break
				}
			}
			t.Logf("%d children gone %v after the parent was killed", len(kids), time.Since(start).Round(time.Millisecond))
		})
	}
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(t *testing.T, pid int) []int {
	t.Helper()
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			n, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
			out = append(out, n)
		}
	}
	return out
}

type writerFunc func([]byte)

func (w writerFunc) Write(b []byte) (int, error) {
	w(b)
	return len(b), nil
}
