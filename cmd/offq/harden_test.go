package main

// Regression tests for issue 14 ("hardening"): files and input an attacker or a mistake can
// put in front of the command line.

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestNonRegularBusRefused: a FIFO named like a bus is refused at once by every command, in a
// process of its own (a command that blocked opening it would never end).
func TestNonRegularBusRefused(t *testing.T) {
	dir := t.TempDir()
	createBus(t, dir, "real")
	if err := syscall.Mkfifo(dir+"/fifo", 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"info"},
		{"stat"},
		{"rm"},
		{"rm", "--force"},
		{"reap"},
		{"pub", "a.b", "--data", "x"},
		{"sub", "a.b", "--count", "1"},
	} {
		p := startOffq(t, append([]string{"--dir", dir, "--bus", "fifo"}, args...)...)
		p.in.Close()
		code, _, stderr := p.wait(10 * time.Second)
		if code != exitRuntime || !strings.Contains(stderr, "not a regular file") || strings.Contains(stderr, "offq: offq:") {
			t.Errorf("offq %s on a FIFO: status %d, stderr %q; want status 1 and \"not a regular file\"", strings.Join(args, " "), code, stderr)
		}
	}
	// ls lists the directory without opening the FIFO for good.
	p := startOffq(t, "--dir", dir, "ls")
	if code, out, stderr := p.wait(10 * time.Second); code != exitOK || !strings.Contains(out, "real") {
		t.Errorf("ls beside a FIFO: status %d, out %q, stderr %q", code, out, stderr)
	}
}

// TestDamagedMagicVisible: a bus whose magic number was overwritten is still listed by ls
// (unreadable, with the reason), named by create as the reason it cannot create, refused by
// rm and removed by rm --force.
func TestDamagedMagicVisible(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	createBus(t, dir, "plant")
	f, err := os.OpenFile(filepath.Join(dir, "plant"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 8), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()

	code, out, stderr := runOffq(t, ctx, "--dir", dir, "ls")
	if code != exitOK || !regexp.MustCompile(`(?m)^plant .*unreadable: .*not an offq region`).MatchString(out) {
		t.Errorf("ls: status %d, out %q, stderr %q; want plant listed as unreadable with the reason", code, out, stderr)
	}
	code, out, _ = runOffq(t, ctx, "--dir", dir, "ls", "--json")
	var entries []lsEntry
	if err := json.Unmarshal([]byte(out), &entries); code != exitOK || err != nil || len(entries) != 1 || entries[0].State != "unreadable" || entries[0].Error == "" {
		t.Errorf("ls --json: status %d, %v, %q", code, err, out)
	}
	code, _, stderr = runOffq(t, ctx, "--dir", dir, "--bus", "plant", "create")
	if code != exitRuntime || !strings.Contains(stderr, "cannot be read") || !strings.Contains(stderr, "rm --force") {
		t.Errorf("create over it: status %d, stderr %q; want it named as unreadable, and rm --force suggested", code, stderr)
	}
	code, _, stderr = runOffq(t, ctx, "--dir", dir, "rm", "plant")
	if code != exitRuntime || !strings.Contains(stderr, "--force") {
		t.Errorf("rm: status %d, stderr %q; want a refusal naming --force", code, stderr)
	}
	code, out, stderr = runOffq(t, ctx, "--dir", dir, "rm", "--force", "plant")
	if code != exitOK || !strings.Contains(out, "removed") {
		t.Errorf("rm --force: status %d, out %q, stderr %q", code, out, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "plant")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after rm --force: %v", err)
	}
}

// TestForeignOwnerRule: one rule for a bus owned by another user (docs/operations.md): the
// tools that only read (info, ls, stat, top) read it and say whose it is; those that attach
// or change it (pub, sub, reap, rm) refuse it unless told (--allow-foreign-owner; --force
// for rm).
func TestForeignOwnerRule(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file to another user")
	}
	const uid = 54321
	dir := t.TempDir()
	ctx := context.Background()
	createBus(t, dir, "theirs")
	if err := os.Chown(filepath.Join(dir, "theirs"), uid, uid); err != nil {
		t.Fatal(err)
	}
	offq := func(args ...string) (int, string, string) {
		t.Helper()
		return runOffq(t, ctx, append([]string{"--dir", dir, "--bus", "theirs"}, args...)...)
	}
	for _, args := range [][]string{{"info"}, {"ls"}, {"stat"}, {"top", "--iterations", "1"}} {
		code, out, stderr := offq(args...)
		if code != exitOK || !strings.Contains(out, "54321") {
			t.Errorf("offq %s on another user's bus: status %d, stderr %q, out:\n%s\nwant it read, and its owner (uid 54321) shown", strings.Join(args, " "), code, stderr, out)
		}
	}
	for _, args := range [][]string{{"info", "--json"}, {"ls", "--json"}, {"stat", "--json"}} {
		code, out, _ := offq(args...)
		if code != exitOK || !strings.Contains(out, `"owner_uid": 54321`) {
			t.Errorf("offq %s on another user's bus: status %d, out:\n%s\nwant \"owner_uid\": 54321", strings.Join(args, " "), code, out)
		}
	}
	for _, tc := range []struct {
		args     []string
		override string
	}{
		{[]string{"rm"}, "--force"},
		{[]string{"create", "--exist-ok"}, "rm --force"},
		{[]string{"reap"}, "--allow-foreign-owner"},
		{[]string{"pub", "a.b", "--data", "x"}, "--allow-foreign-owner"},
		{[]string{"sub", "a.b", "--timeout", "1ms"}, "--allow-foreign-owner"},
	} {
		code, _, stderr := offq(tc.args...)
		if code != exitRuntime || !strings.Contains(stderr, "owned by uid 54321") || !strings.Contains(stderr, tc.override) || strings.Contains(stderr, "offq: offq:") {
			t.Errorf("offq %s on another user's bus: status %d, stderr %q; want a refusal naming the owner and %s", strings.Join(tc.args, " "), code, stderr, tc.override)
		}
	}
	for _, args := range [][]string{
		{"reap", "--allow-foreign-owner"},
		{"pub", "a.b", "--data", "x", "--allow-foreign-owner"},
		{"rm", "--force"},
	} {
		if code, _, stderr := offq(args...); code != exitOK {
			t.Errorf("offq %s: status %d, stderr %q", strings.Join(args, " "), code, stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "theirs")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after rm --force: %v", err)
	}
}

// TestCommandLineInput: flags and arguments that were accepted, or refused only after harm
// or with the wrong status.
func TestCommandLineInput(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	createBus(t, dir, "b") // classes 256:256,4KiB:16; inbox capacity and history depth default
	for _, tc := range []struct {
		args []string
		code int
		want []string // in stderr
	}{
		{[]string{"pub", "a.b", "--data", "x", "--rate", "NaN"}, exitUsage, []string{"--rate NaN"}},
		{[]string{"pub", "a.b", "--data", "x", "--rate", "+Inf"}, exitUsage, []string{"--rate +Inf"}},
		{[]string{"pub", "a.b", "--data", "x", "--rate", "1e-300"}, exitUsage, []string{"--rate 1e-300"}},
		{[]string{"pub", "a.b", "--data", "x", "--history", "5000"}, exitUsage, []string{"--history 5000", "16"}},
		{[]string{"sub", "a.b", "--queue-depth", "3"}, exitUsage, []string{"--queue-depth 3", "power of two"}},
		{[]string{"sub", "a.b", "--queue-depth", "4096"}, exitUsage, []string{"--queue-depth 4096", "1024"}},
		{[]string{"sub", "a.b", "--queue-depth", "-1"}, exitUsage, []string{"--queue-depth -1"}},
		{[]string{"create", "--bus", "m1", "--mode", "0777"}, exitUsage, []string{`--mode "0777"`}},
		{[]string{"create", "--bus", "m2", "--mode", "0606"}, exitUsage, []string{`--mode "0606"`}},
		{[]string{"create", "--bus", "m3", "--mode", "0700"}, exitUsage, []string{`--mode "0700"`}},
		{[]string{"create", "--bus", "m4", "--mode", "0640"}, exitOK, nil},
		{[]string{"pub", "a.\u200bb", "--data", "x"}, exitUsage, []string{`"a.\u200bb"`, "U+200B", "byte 2"}},
		{[]string{"sub", "a.\u202e>", "--count", "1"}, exitUsage, []string{"U+202E", "byte 2"}},
		{[]string{"--bus", "é", "info"}, exitUsage, []string{`"é"`, `'é' at byte 0`}},
		{[]string{"--bus", "a\xff", "info"}, exitUsage, []string{`"a\xff"`, `byte 1 (0xff`}},
	} {
		args := append([]string{"--dir", dir, "--bus", "b"}, tc.args...)
		code, _, stderr := runOffq(t, ctx, args...)
		ok := code == tc.code && !strings.Contains(stderr, "offq: offq:") && !strings.Contains(stderr, "Ã")
		for _, w := range tc.want {
			ok = ok && strings.Contains(stderr, w)
		}
		if !ok {
			t.Errorf("offq %q: status %d, stderr %q; want status %d and %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "m1")); err == nil {
		t.Errorf("create --mode 0777 made %s", fi.Mode())
	}
}

// TestPubSizeLargerThanBus: --size larger than the bus's largest buffer is refused before the
// payload is built, not after 64 MiB (or 1 GiB) of memory was filled.
func TestPubSizeLargerThanBus(t *testing.T) {
	dir := t.TempDir()
	createBus(t, dir, "b") // largest class 4 KiB
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	code, _, stderr := runOffq(t, context.Background(), "--dir", dir, "--bus", "b", "pub", "a.b", "--size", "67108864")
	runtime.ReadMemStats(&after)
	if code != exitUsage || !strings.Contains(stderr, "--size") || !strings.Contains(stderr, "4.0 KiB") {
		t.Errorf("pub --size 64MiB on a bus of 4 KiB buffers: status %d, stderr %q", code, stderr)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 16<<20 {
		t.Errorf("pub --size 64MiB allocated %d bytes before refusing", got)
	}
	// Sizes take units, like --classes.
	if code, _, stderr := runOffq(t, context.Background(), "--dir", dir, "--bus", "b", "pub", "a.b", "--size", "1KiB", "-q"); code != exitOK {
		t.Errorf("pub --size 1KiB: status %d, %q", code, stderr)
	}
}

// TestConfigFileBounded: --config reads a regular file of bounded size, never a device or a
// FIFO (which would read forever or block), in a process of its own.
func TestConfigFileBounded(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "conf.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.toml")
	if err := os.WriteFile(big, []byte("# "+strings.Repeat("x", 2<<20)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ conf, want string }{
		{big, "larger than 1 MiB"},
		{fifo, "not a regular file"},
		{"/dev/zero", "not a regular file"},
	} {
		p := startOffq(t, "--dir", dir, "create", "--config", tc.conf)
		code, _, stderr := p.wait(10 * time.Second)
		if code != exitRuntime || !strings.Contains(stderr, tc.want) {
			t.Errorf("create --config %s: status %d, stderr %q; want status 1 and %q", tc.conf, code, stderr, tc.want)
		}
	}
}

// TestCLIMessages: issue 17's messages: hints that keep --dir, arguments named as in the
// usage line, create --exist-ok against the existing bus, top without escapes into a pipe,
// human sizes in tables and raw ones in JSON.
func TestCLIMessages(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	offq := func(args ...string) (int, string, string) {
		t.Helper()
		return runOffq(t, ctx, append([]string{"--dir", dir}, args...)...)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string // in stderr
	}{
		{[]string{"--bus", "nosuch", "pub", "a.b", "--data", "x"}, exitRuntime, "offq --dir " + dir + " create --bus nosuch"},
		{[]string{"--bus", "nosuch", "sub", "a.b"}, exitRuntime, "offq --dir " + dir + " create --bus nosuch"},
		{[]string{"pub"}, exitUsage, "pub takes one argument, TOPIC"},
		{[]string{"pub", "a", "b"}, exitUsage, `pub takes one argument, TOPIC (got 2: "a" "b")`},
		{[]string{"pub", "a.b", "hello", "1"}, exitUsage, `the message goes in --data: offq pub a.b --data 'hello 1'`},
		{[]string{"req", "a.b", "ping"}, exitUsage, `the message goes in --data: offq req a.b --data ping`},
		{[]string{"sub", "a.b", "c"}, exitUsage, `sub takes one argument, PATTERN (got 2: "a.b" "c")`},
		{[]string{"sub"}, exitUsage, "sub takes one argument, PATTERN"},
		{[]string{"create", "extra-arg"}, exitUsage, `create takes no arguments (got "extra-arg")`},
		{[]string{"info", "x"}, exitUsage, `info takes no arguments`},
		{[]string{"stat", "x"}, exitUsage, `stat takes no arguments`},
	} {
		code, _, stderr := offq(tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) || strings.Contains(stderr, "unknown command") {
			t.Errorf("offq %q: status %d, stderr %q; want status %d and %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}

	// --exist-ok with no configuration flags accepts the bus as it is; with flags, it compares.
	if code, _, stderr := offq("create", "--bus", "small", "--classes", "256:64"); code != exitOK {
		t.Fatalf("create: %d %s", code, stderr)
	}
	if code, out, stderr := offq("create", "--bus", "small", "--exist-ok"); code != exitOK || !strings.Contains(out, "exists") {
		t.Errorf("create --exist-ok over a bus of other sizes than the defaults: status %d, out %q, stderr %q", code, out, stderr)
	}
	if code, _, stderr := offq("create", "--bus", "small", "--exist-ok", "--classes", "256:128"); code != exitRuntime || !strings.Contains(stderr, "incompatible configuration") {
		t.Errorf("create --exist-ok --classes other: status %d, stderr %q", code, stderr)
	}

	// top into a pipe (here a buffer): no ANSI escapes.
	if code, out, _ := offq("top", "--iterations", "2", "--interval", "10ms"); code != exitOK || strings.Contains(out, "\x1b") || strings.Count(out, "offq top  ") != 2 {
		t.Errorf("top into a pipe: status %d, %q", code, out)
	}

	// Human sizes in tables, raw ones in JSON.
	if code, _, stderr := offq("--bus", "small", "pub", "a.b", "--size", "200", "-n", "6", "-q"); code != exitOK {
		t.Fatalf("pub: %d %s", code, stderr)
	}
	code, out, _ := offq("--bus", "small", "stat")
	if code != exitOK || !regexp.MustCompile(`(?m)^a\.b +6 +1\.2 KiB +0 +0 +0 +-$`).MatchString(out) {
		t.Errorf("stat: topic bytes not human:\n%s", out)
	}
	code, out, _ = offq("--bus", "small", "stat", "--json")
	if code != exitOK || !strings.Contains(out, `"bytes": 1200`) {
		t.Errorf("stat --json: bytes not raw:\n%s", out)
	}
	code, out, _ = offq("--bus", "small", "info")
	if code != exitOK || !regexp.MustCompile(`(?m)^size +[0-9.]+ [KMG]iB$`).MatchString(out) {
		t.Errorf("info: size not human:\n%s", out)
	}

	// A typed topic's history depth and codec in stat's topic table and its JSON.
	if code, _, stderr := offq("--bus", "small", "pub", "typed.t", "--json", "--history", "2", "--data", `{"a":1}`, "-q"); code != exitOK {
		t.Fatalf("pub --json: %d %s", code, stderr)
	}
	code, out, _ = offq("--bus", "small", "stat")
	if code != exitOK || !regexp.MustCompile(`(?m)^typed\.t +1 +4 B +0 +0 +2 +msgpack$`).MatchString(out) {
		t.Errorf("stat: no history depth and codec for typed.t:\n%s", out)
	}
	code, out, _ = offq("--bus", "small", "stat", "--json")
	if code != exitOK || !regexp.MustCompile(`"history_depth": 2,\s+"codec": "msgpack",\s+"fingerprint": "[0-9a-f]{16}"`).MatchString(out) {
		t.Errorf("stat --json: no codec and fingerprint for typed.t:\n%s", out)
	}
}
