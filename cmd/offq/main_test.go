package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// TestMain makes the test binary usable as offq itself: the demo re-executes
// os.Executable(), which in a test is this binary, with envDemoPeer set; such a copy runs the
// command line instead of the tests.
func TestMain(m *testing.M) {
	if os.Getenv(envDemoPeer) == "1" {
		os.Exit(run(context.Background(), os.Args[1:], faultStdout(), os.Stderr))
	}
	goleak.VerifyTestMain(m)
}

// runOffq runs the offq command line in-process and returns its exit status and output.
func runOffq(t *testing.T, ctx context.Context, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		code int
		want string // in stderr
	}{
		{[]string{"--help"}, exitOK, ""},
		{[]string{"demo", "--help"}, exitOK, ""},
		{[]string{"nosuch"}, exitUsage, `unknown command "nosuch"`},
		{[]string{"demo", "--nosuch"}, exitUsage, "unknown flag: --nosuch"},
		{[]string{"demo", "extra"}, exitUsage, "unknown command"},
		{[]string{"demo", "--rate", "0"}, exitUsage, "--rate 0"},
		{[]string{"demo", "--size", "8"}, exitUsage, "--size 8"},
		{[]string{"demo", "--duration", "x"}, exitUsage, "invalid argument"},
		{[]string{"--log-level", "loud", "demo"}, exitUsage, `--log-level "loud"`},
		{[]string{"--bus", "../x", "demo"}, exitUsage, "--bus"},
		{[]string{"demo-peer", "--role", "x", "--dir", dir}, exitUsage, `--role "x"`},
		{[]string{"demo", "--dir", dir + "/missing"}, exitRuntime, "demo: create bus"},
	} {
		code, _, stderr := runOffq(t, context.Background(), tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("offq %s: status %d, stderr %q; want status %d and %q", strings.Join(tc.args, " "), code, stderr, tc.code, tc.want)
		}
	}
}
