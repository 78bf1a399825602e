package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/offq/offq/examples/internal/launch"
)

// TestMain plays a child's role when the example re-executes the test binary.
func TestMain(m *testing.M) { launch.Main(m, child) }

// The service handles every command on 500 subscriptions, and runs them idle on fewer than
// 32 OS threads.
func TestServices(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out strings.Builder
	if err := run(ctx, &out, 500, 3); err != nil {
		t.Fatal(err)
	}
	t.Log(out.String())
	if !strings.Contains(out.String(), "1500 commands handled in order on 500 subscriptions, 3 status requests") {
		t.Error("the service did not handle every command and status request")
	}
	i := strings.Index(out.String(), "OS threads: ")
	var idle, end int
	if i < 0 {
		t.Fatal("no thread count")
	}
	if _, err := fmt.Sscanf(out.String()[i:], "OS threads: %d idle, %d at the end", &idle, &end); err != nil {
		t.Fatal(err)
	}
	if idle >= 32 {
		t.Errorf("500 idle subscriptions on %d OS threads, want fewer than 32", idle)
	}
}
