// Package lint holds offq's layering rules as tests, after pebble's internal/lint: which
// package may import what. A change that breaks a rule fails `go test ./...`.
package lint

import (
	"go/build"
	"os/exec"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/offq/offq"

// pkg is one package of the module as `go list` reports it.
type pkg struct {
	path    string
	imports []string // direct imports, test files included
}

// packages lists every package of the module, with the direct imports of its Go files and of
// its test files.
func packages(t *testing.T) []pkg {
	t.Helper()
	out, err := exec.Command("go", "list", "-tags", "offqcheck",
		"-f", `{{.ImportPath}}|{{join .Imports " "}}|{{join .TestImports " "}}|{{join .XTestImports " "}}`,
		module+"/...").Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "|")
		p := pkg{path: f[0]}
		for _, s := range f[1:] {
			p.imports = append(p.imports, strings.Fields(s)...)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 10 {
		t.Fatalf("go list found %d packages; is the module layout what this test expects?", len(pkgs))
	}
	return pkgs
}

// nonTestImports lists the imports of a package's non-test Go files only.
func nonTestImports(t *testing.T, importPath string) []string {
	t.Helper()
	p, err := build.Import(importPath, "", 0)
	if err != nil {
		t.Fatalf("%s: %v", importPath, err)
	}
	return p.Imports
}

// rule: only the packages in allowed may import imp (any package whose path starts with imp
// counts as imp: "github.com/nats-io/nats.go" covers its subpackages).
type rule struct {
	imp     string
	allowed []string // module-relative package paths; "" is the module root
	why     string
}

var rules = []rule{
	{"unsafe", []string{"internal/shm", "internal/floor"},
		"byte offsets and pointer arithmetic live in the protocol package (and the bench floor) only"},
	{"golang.org/x/sys/unix", []string{"internal/shm", "internal/floor"},
		"system calls on the region live in the protocol package (and the bench floor) only"},
	{"github.com/vmihailenco/msgpack", []string{"codec"}, "codec is the only msgpack importer"},
	{"github.com/prometheus/client_golang", []string{"metrics"}, "metrics is the only Prometheus importer"},
	{"github.com/nats-io/nats.go", []string{"bridge", "cmd/offq", "internal/bench"},
		"NATS is the bridge's (and the benchmark's baseline row)"},
	{"github.com/nats-io/nats-server", []string{"bridge", "cmd/offq", "internal/bench"},
		"the embedded NATS server is for the bridge's tests and the benchmark's baseline row"},
}

// TestImportRules checks the rules against the non-test files of every package: tests may
// reach further (a test of metrics may build a bus with internal/shm to exhaust a pool).
func TestImportRules(t *testing.T) {
	for _, p := range packages(t) {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.path, module), "/")
		for _, imp := range nonTestImports(t, p.path) {
			for _, r := range rules {
				if imp != r.imp && !strings.HasPrefix(imp, r.imp+"/") && !strings.HasPrefix(imp, r.imp) {
					continue
				}
				if !allowed(rel, r.allowed) {
					t.Errorf("%s imports %s: %s", p.path, imp, r.why)
				}
			}
		}
	}
}

func allowed(rel string, list []string) bool {
	for _, a := range list {
		if rel == a || strings.HasPrefix(rel, a+"/") {
			return true
		}
	}
	return false
}

// TestLayers checks the direction of the module's layers: the protocol imports nothing of
// offq's; topics and codec nothing above the protocol; bus nothing of the tools; and the
// application packages (bus, codec, topics) never the tool tier or the protocol's test kit.
func TestLayers(t *testing.T) {
	forbidden := map[string][]string{
		"internal/shm": {"bus", "codec", "topics", "metrics", "bridge", "transport", "cmd"},
		"topics":       {"internal/shm", "bus", "codec", "metrics", "bridge", "transport", "cmd"},
		"codec":        {"bus", "metrics", "bridge", "transport", "cmd"},
		"transport":    {"bus", "metrics", "bridge", "cmd"},
		"bus":          {"metrics", "bridge", "transport", "cmd"},
		"metrics":      {"bridge", "cmd"},
	}
	for _, p := range packages(t) {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.path, module), "/")
		deny, ok := forbidden[rel]
		if !ok {
			continue
		}
		for _, imp := range nonTestImports(t, p.path) {
			if !strings.HasPrefix(imp, module+"/") {
				continue
			}
			irel := strings.TrimPrefix(imp, module+"/")
			for _, d := range deny {
				if irel == d || strings.HasPrefix(irel, d+"/") {
					t.Errorf("%s imports %s: the layers run shm ← topics/codec ← bus ← metrics, bridge, cmd", rel, irel)
				}
			}
		}
	}
}

// TestToolTierSize keeps the public tool tier small: the shared-memory protocol is reached
// through bus, and transport names only configuration, statistics, open/list/reap and errors.
func TestToolTierSize(t *testing.T) {
	out, err := exec.Command("go", "doc", "-short", module+"/transport").Output()
	if err != nil {
		t.Fatalf("go doc: %v", err)
	}
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		names = append(names, strings.TrimSpace(l))
	}
	sort.Strings(names)
	const limit = 60 // top-level names; methods of Region are not listed by -short
	if len(names) > limit {
		t.Errorf("transport exports %d top-level names, more than %d: the tool tier is growing into a kit:\n%s",
			len(names), limit, strings.Join(names, "\n"))
	}
}
