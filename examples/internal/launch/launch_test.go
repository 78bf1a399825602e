package launch

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { Main(m, child) }

func child(ctx context.Context) error {
	switch Role() {
	case "hang":
		Say("hanging")
		<-ctx.Done()
		return nil
	case "parent": // starts two children, says their pids, waits to be killed
		var pids []string
		for range 2 {
			c, err := Start(context.Background(), "hang", "hang", "", Dir())
			if err != nil {
				return err
			}
			if _, err := c.Expect(ctx, "hanging"); err != nil {
				return err
			}
			pids = append(pids, strconv.Itoa(c.Pid()))
		}
		Say("children %s", strings.Join(pids, " "))
		<-ctx.Done()
		return nil
	}
	return nil
}

// TestKilledParent: an example killed with SIGKILL leaves none of its children running.
func TestKilledParent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := Start(ctx, "parent", "parent", "", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	rest, err := p.Expect(ctx, "children")
	if err != nil {
		t.Fatal(err)
	}
	var fds []int
	for _, s := range strings.Fields(rest) {
		pid, _ := strconv.Atoi(s)
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			t.Fatalf("pidfd_open %d: %v", pid, err)
		}
		defer unix.Close(fd)
		fds = append(fds, fd)
	}
	if err := unix.Kill(p.Pid(), unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	const bound = 10 * time.Second
	start := time.Now()
	for _, fd := range fds {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}} // readable once it has exited
		for {
			n, err := unix.Poll(pfd, int(max(0, bound-time.Since(start)).Milliseconds()))
			if err == unix.EINTR {
				continue
			}
			if err != nil || n == 0 {
				t.Fatalf("a child still running %v after its parent was killed (%v)", bound, err)
			}
			break
		}
	}
	if len(fds) != 2 {
		t.Fatalf("children %q", rest)
	}
	p.Wait(ctx)
}
