package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestForeignArchitecture: processes built for different architectures share a bus. The
// region's layout is the same on every platform (fixed-width words at fixed offsets, no Go
// pointer, int or uintptr in it), so a 32-bit arm offq attaches to a region this 64-bit one
// made, each receives what the other publishes, the arm one answers this one's request, and
// this one reaps the other when it is killed. The test builds offq for 32-bit arm and runs it as the kernel does (binfmt_misc:
// qemu-user on an x86-64 host, natively on most arm64 ones). Where the kernel cannot run it,
// the test is skipped, unless CI=true, where it fails: .ci/run registers qemu.
func TestForeignArchitecture(t *testing.T) {
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		t.Skipf("the foreign build is 32-bit arm, for a 64-bit host; this is %s", runtime.GOARCH)
	}
	bin := buildForeign(t, "arm")
	dir := t.TempDir()
	createBus(t, dir, "mix")
	at := []string{"--dir", dir, "--bus", "mix"}
	const wait = 60 * time.Second // an emulated process starts in a second or two

	// The foreign process subscribes; this architecture publishes.
	sub := startOffqBin(t, bin, append(at, "sub", "mix.>", "--count", "3")...)
	sub.waitStderr("subscribed", wait)
	for _, m := range []string{"one", "two", "three"} {
		if code, _, stderr := runOffq(t, context.Background(), append(at, "pub", "mix.a", "--data", m)...); code != exitOK {
			t.Fatalf("pub %s: status %d, %s", m, code, stderr)
		}
	}
	if code, out, stderr := sub.wait(wait); code != exitOK || out != "mix.a #1: one\nmix.a #2: two\nmix.a #3: three\n" {
		t.Fatalf("arm sub: status %d, stdout %q, stderr %q", code, out, stderr)
	}

	// The other way round, two messages of two size classes (256 B and 4 KiB).
	mine := startOffq(t, append(at, "sub", "mix.b", "--count", "2", "--raw")...)
	mine.waitStderr("subscribed", wait)
	big := strings.Repeat("x", 1000)
	for _, m := range []string{"small", big} {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		out, err := exec.CommandContext(ctx, bin, append(at, "pub", "mix.b", "--data", m)...).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("arm pub: %v\n%s", err, out)
		}
	}
	if code, out, stderr := mine.wait(wait); code != exitOK || out != "small\n"+big+"\n" {
		t.Fatalf("sub of the arm process's messages: status %d, stdout %q, stderr %q", code, out, stderr)
	}

	// A request from here, answered by the foreign process (reply inboxes, correlation ids).
	rep := startOffqBin(t, bin, append(at, "reply", "mix.svc", "--command", "tr a-z A-Z", "--count", "1")...)
	rep.waitStderr("answering", wait)
	if code, out, stderr := runOffq(t, context.Background(), append(at, "req", "mix.svc", "--data", "hello arm", "--timeout", "60s")...); code != exitOK || out != "HELLO ARM" {
		t.Fatalf("req answered by the arm process: status %d, stdout %q, stderr %q", code, out, stderr)
	}
	if code, _, stderr := rep.wait(wait); code != exitOK {
		t.Fatalf("arm reply: status %d, %s", code, stderr)
	}

	// A foreign subscriber killed: its inbox and what it held are reclaimed from here.
	dead := startOffqBin(t, bin, append(at, "sub", "mix.c")...)
	dead.waitStderr("subscribed", wait)
	if code, _, stderr := runOffq(t, context.Background(), append(at, "pub", "mix.c", "--data", "lost")...); code != exitOK || !strings.Contains(stderr, "to 1 subscriber") {
		t.Fatalf("pub to the arm subscriber: status %d, %s", code, stderr)
	}
	dead.cmd.Process.Kill()
	dead.wait(wait)
	code, out, stderr := runOffq(t, context.Background(), append(at, "reap")...)
	if code != exitOK || !strings.Contains(out+stderr, "reclaimed 1 dead participant(s): 1 inbox(es)") {
		t.Fatalf("reap of the killed arm process: status %d, %s%s", code, out, stderr)
	}
	code, out, _ = runOffq(t, context.Background(), "--dir", dir, "ls")
	if code != exitOK || !regexp.MustCompile(`(?m)^mix .* 0 +0 +ok$`).MatchString(out) {
		t.Errorf("ls after the reap: %d\n%s", code, out)
	}
	if code, _, stderr := runOffq(t, context.Background(), append(at, "pub", "mix.c", "--data", "after")...); code != exitOK || !strings.Contains(stderr, "to 0 subscribers") {
		t.Errorf("pub after the reap: status %d, %s", code, stderr)
	}
}

// buildForeign builds offq for goarch (Linux) and returns its path, once it has checked that
// the kernel runs it; if not, the test is skipped (or fails, with CI=true).
func buildForeign(t *testing.T, goarch string) string {
	t.Helper()
	cannot := func(why string, args ...any) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatalf(why, args...)
		}
		t.Skipf(why+" (CI=true makes this a failure)", args...)
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		cannot("no go command to build offq for %s: %v", goarch, err)
	}
	bin := filepath.Join(t.TempDir(), "offq-"+goarch)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // a cold build for arm took 30 s here
	defer cancel()
	build := exec.CommandContext(ctx, goTool, "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+goarch, "GOARM=7", "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build for %s: %v\n%s", goarch, err, out)
	}
	if out, err := exec.CommandContext(ctx, bin, "--help").CombinedOutput(); err != nil {
		if errors.Is(err, syscall.ENOEXEC) {
			cannot("this kernel does not run %s binaries: register qemu-user with binfmt_misc (.ci/run shows how)", goarch)
		}
		t.Fatalf("offq for %s: %v\n%s", goarch, err, out)
	}
	return bin
}
