package peer

import (
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	Dispatch(map[string]Role{
		"echo": func(c *Child) error {
			c.Send("hello %s", os.Getenv("GREETING"))
			for {
				l, err := c.Recv()
				if err == io.EOF {
					return nil
				}
				if err != nil {
					return err
				}
				c.Send("%s", strings.ToUpper(l))
			}
		},
		"fail": func(c *Child) error { return errors.New("as asked") },
		"wait": func(c *Child) error { // until stopped or past its deadline
			<-c.Context().Done()
			if c.Stopped() {
				return nil
			}
			return c.Context().Err()
		},
		"hang": func(c *Child) error { // ignores its deadline
			c.Send("hanging")
			time.Sleep(time.Hour)
			return nil
		},
	})
	os.Exit(m.Run())
}

func TestEcho(t *testing.T) {
	p := Start(t, "echo", "GREETING=world")
	if rest, err := p.Expect("hello", 10*time.Second); err != nil || rest != "world" {
		t.Fatalf("Expect: %q, %v", rest, err)
	}
	for _, s := range []string{"a", "bc"} {
		if err := p.Send("%s", s); err != nil {
			t.Fatal(err)
		}
		if l, err := p.ReadLine(10 * time.Second); err != nil || l != strings.ToUpper(s) {
			t.Fatalf("ReadLine: %q, %v", l, err)
		}
	}
	if _, err := p.ReadLine(0); err == nil {
		t.Error("ReadLine(0) returned a line that was never sent")
	}
	p.CloseStdin()
	if err := p.Wait(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := p.ReadLine(time.Second); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("ReadLine after exit: %v", err)
	}
}

func TestFailingRole(t *testing.T) {
	p := Start(t, "fail")
	if err := p.Wait(10 * time.Second); err == nil || !strings.Contains(err.Error(), "exit status 1") {
		t.Fatalf("Wait: %v, want exit status 1", err)
	}
}

func TestUnknownRole(t *testing.T) {
	p := Start(t, "no-such-role")
	if err := p.Wait(10 * time.Second); err == nil || !strings.Contains(err.Error(), "exit status 2") {
		t.Fatalf("Wait: %v, want exit status 2", err)
	}
}

func TestStopAndDeadline(t *testing.T) {
	p := Start(t, "wait")
	p.CloseStdin()
	if err := p.Wait(10 * time.Second); err != nil {
		t.Fatalf("stopped child: %v", err)
	}
	soon := EnvDeadline + "=" + strconv.FormatInt(time.Now().Add(100*time.Millisecond).UnixNano(), 10)
	p = Start(t, "wait", soon)
	if err := p.Wait(10 * time.Second); err == nil || !strings.Contains(err.Error(), "exit status 1") {
		t.Fatalf("child past its deadline: %v, want exit status 1", err)
	}
}

func TestHardDeadline(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the grace period")
	}
	soon := EnvDeadline + "=" + strconv.FormatInt(time.Now().Add(100*time.Millisecond).UnixNano(), 10)
	p := Start(t, "hang", soon)
	if err := p.Wait(grace + 10*time.Second); err == nil || !strings.Contains(err.Error(), "deadline passed") {
		t.Fatalf("Wait: %v, want exit after the deadline", err)
	}
}

func TestKilledAtCleanup(t *testing.T) {
	var p *Proc
	t.Run("inner", func(t *testing.T) {
		p = Start(t, "hang")
		if _, err := p.Expect("hanging", 10*time.Second); err != nil {
			t.Fatal(err)
		}
	})
	select {
	case <-p.Exited():
	default:
		t.Fatal("child still running after its test ended")
	}
}

func TestParentGone(t *testing.T) {
	p := Start(t, "hang")
	if _, err := p.Expect("hanging", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	p.life.Close() // as if this process had died
	if err := p.Wait(10 * time.Second); err == nil || !strings.Contains(err.Error(), "exit status 4") {
		t.Fatalf("Wait: %v, want exit status 4", err)
	}
}
