package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/offq/offq/internal/shm"
	"github.com/offq/offq/transport"
)

// TestRegionLifecycle drives create, info, ls and rm as a user would.
func TestRegionLifecycle(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	offq := func(args ...string) (int, string, string) {
		t.Helper()
		return runOffq(t, ctx, append([]string{"--dir", dir}, args...)...)
	}

	code, out, stderr := offq("create", "--bus", "plant", "--classes", "256:64,64KiB:4", "--inbox-capacity", "128", "--mode", "0660")
	if code != exitOK {
		t.Fatalf("create: status %d, stderr %q", code, stderr)
	}
	for _, want := range []string{`created bus "plant"`, "64 x 256B, 4 x 64KiB", "queues up to 128"} {
		if !strings.Contains(out, want) {
			t.Errorf("create output lacks %q:\n%s", want, out)
		}
	}
	fi, err := os.Stat(filepath.Join(dir, "plant"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Errorf("mode %v, want 0660", fi.Mode().Perm())
	}
	r, err := transport.Open("plant", transport.Options{Dir: dir, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	cfg := r.Config()
	r.Close()
	if len(cfg.Classes) != 2 || cfg.Classes[1] != (transport.Class{Size: 64 << 10, Count: 4}) || cfg.InboxCapacity != 128 || cfg.Topics != transport.DefaultConfig().Topics {
		t.Errorf("config %+v", cfg)
	}

	// Again: an error, unless --exist-ok and the same configuration.
	if code, _, stderr := offq("create", "--bus", "plant"); code != exitRuntime || !strings.Contains(stderr, "already exists") {
		t.Errorf("create over an existing bus: status %d, stderr %q", code, stderr)
	}
	if code, _, stderr := offq("create", "--bus", "plant", "--exist-ok", "--classes", "256:64"); code != exitRuntime || !strings.Contains(stderr, "incompatible configuration") {
		t.Errorf("create --exist-ok, other config: status %d, stderr %q", code, stderr)
	}
	if code, out, _ := offq("create", "--bus", "plant", "--exist-ok", "--classes", "256:64,64KiB:4", "--inbox-capacity", "128"); code != exitOK || !strings.Contains(out, "exists with the same configuration") {
		t.Errorf("create --exist-ok, same config: status %d, out %q", code, out)
	}

	// From a configuration file, with a flag on top.
	conf := filepath.Join(dir, "small.toml")
	if err := os.WriteFile(conf, []byte("inboxes = 8\n[[classes]]\nsize = \"1KiB\"\ncount = 16\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := offq("create", "--bus", "small", "--config", conf, "--topics", "16"); code != exitOK {
		t.Fatalf("create --config: status %d, stderr %q", code, stderr)
	}

	code, out, _ = offq("info", "--bus", "small")
	if code != exitOK {
		t.Fatalf("info: status %d", code)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^bus +small$`),
		regexp.MustCompile(`(?m)^buffers +16 x 1KiB$`),
		regexp.MustCompile(`(?m)^tables +inboxes 8 .*topics 16,`),
		regexp.MustCompile(`(?m)^participants +0 live \(of 64 slots\)$`),
	} {
		if !want.MatchString(out) {
			t.Errorf("info output does not match %s:\n%s", want, out)
		}
	}
	code, out, _ = offq("info", "--bus", "small", "--json")
	var inf busInfo
	if code != exitOK || json.Unmarshal([]byte(out), &inf) != nil || inf.Config.Inboxes != 8 || inf.Config.Topics != 16 || len(inf.Pools) != 1 || inf.Name != "small" {
		t.Errorf("info --json: status %d, %+v\n%s", code, inf, out)
	}

	// ls lists regions only, not other files.
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, _ = offq("ls")
	if code != exitOK || !regexp.MustCompile(`(?m)^plant +\S+ +[0-9.]+ [KM]iB .* 0 +0 +ok$`).MatchString(out) || !strings.Contains(out, "\nsmall ") || strings.Contains(out, "notes") {
		t.Errorf("ls: status %d\n%s", code, out)
	}
	code, out, _ = offq("ls", "--json")
	var ents []lsEntry
	if code != exitOK || json.Unmarshal([]byte(out), &ents) != nil || len(ents) != 2 || ents[0].Name != "plant" || ents[0].State != "ok" {
		t.Errorf("ls --json: status %d, %+v", code, ents)
	}

	// rm one by --bus, one by name; then they are gone.
	if code, out, _ := offq("rm", "--bus", "plant"); code != exitOK || !strings.Contains(out, "removed ") {
		t.Errorf("rm: status %d, %q", code, out)
	}
	if code, _, _ := offq("rm", "small"); code != exitOK {
		t.Errorf("rm small: status %d", code)
	}
	if code, out, _ := offq("ls"); code != exitOK || !strings.Contains(out, "no buses in") {
		t.Errorf("ls after rm: %q", out)
	}
	if code, _, stderr := offq("rm", "--bus", "plant"); code != exitRuntime || !strings.Contains(stderr, `bus "plant" not found`) {
		t.Errorf("rm of a missing bus: status %d, %q", code, stderr)
	}
	if code, _, _ := offq("rm", "--force", "plant"); code != exitOK {
		t.Errorf("rm --force of a missing bus: status %d", code)
	}
	if code, _, stderr := offq("rm", "notes.txt"); code != exitRuntime || !strings.Contains(stderr, "not an offq region") {
		t.Errorf("rm of another file: status %d, %q", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "notes.txt")); err != nil {
		t.Errorf("rm removed a file that is not a region: %v", err)
	}
}

// TestRmRefusesLiveBus: a bus a live process is attached to is removed only with --force.
func TestRmRefusesLiveBus(t *testing.T) {
	dir := t.TempDir()
	r, err := shm.Create("busy", shm.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p, err := r.Attach("holder")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Detach()
	code, _, stderr := runOffq(t, context.Background(), "--dir", dir, "rm", "--bus", "busy")
	if code != exitRuntime || !strings.Contains(stderr, "in use by pid") || !strings.Contains(stderr, "(holder)") {
		t.Fatalf("rm of a live bus: status %d, %q", code, stderr)
	}
	code, out, _ := runOffq(t, context.Background(), "--dir", dir, "info", "--bus", "busy")
	if code != exitOK || !regexp.MustCompile(`(?m)^participants +1 live `).MatchString(out) || !regexp.MustCompile(`(?m)^0 +\d+ +live .* holder$`).MatchString(out) {
		t.Errorf("info of a live bus: %d\n%s", code, out)
	}
	if code, _, _ := runOffq(t, context.Background(), "--dir", dir, "rm", "--force", "--bus", "busy"); code != exitOK {
		t.Fatalf("rm --force: status %d", code)
	}
}

func TestRegionCommandErrors(t *testing.T) {
	dir := t.TempDir()
	badConf := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(badConf, []byte("inboxs = 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"create", "--help"}, exitOK, ""},
		{[]string{"info", "--help"}, exitOK, ""},
		{[]string{"ls", "--help"}, exitOK, ""},
		{[]string{"rm", "--help"}, exitOK, ""},
		{[]string{"create", "--classes", "256"}, exitUsage, "want SIZE:COUNT"},
		{[]string{"create", "--classes", "100:4"}, exitUsage, "multiple of 64"},
		{[]string{"create", "--inbox-capacity", "100"}, exitUsage, "power of two"},
		{[]string{"create", "--mode", "0400"}, exitUsage, "--mode"},
		{[]string{"create", "--config", badConf}, exitUsage, "unknown keys inboxs"},
		{[]string{"create", "--config", filepath.Join(dir, "missing.toml")}, exitRuntime, "load config"},
		{[]string{"create", "extra"}, exitUsage, `create takes no arguments (got "extra")`},
		{[]string{"create", "--dir", filepath.Join(dir, "nodir")}, exitRuntime, "create"},
		{[]string{"info"}, exitRuntime, `bus "default" not found`},
		{[]string{"info", "--bus", "x/y"}, exitUsage, "--bus"},
		{[]string{"ls", "--dir", filepath.Join(dir, "nodir")}, exitRuntime, "ls:"},
		{[]string{"rm", "../etc"}, exitUsage, "invalid region name"},
	} {
		args := append([]string{"--dir", dir}, tc.args...)
		code, _, stderr := runOffq(t, context.Background(), args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("offq %s: status %d, stderr %q; want status %d and %q", strings.Join(tc.args, " "), code, stderr, tc.code, tc.want)
		}
	}
	// A file that is not a region is reported by info and ls, not attached to.
	if err := os.WriteFile(filepath.Join(dir, "junk"), make([]byte, 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runOffq(t, context.Background(), "--dir", dir, "info", "--bus", "junk"); code != exitRuntime || !strings.Contains(stderr, "corrupt") {
		t.Errorf("info of junk: status %d, %q", code, stderr)
	}
}
