package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/offq/offq/examples/internal/launch"
)

// TestMain plays a child's role when the example re-executes the test binary.
func TestMain(m *testing.M) { launch.Main(m, child) }

func TestFanout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out strings.Builder
	if err := run(ctx, &out, 300, 3); err != nil {
		t.Fatal(err)
	}
	t.Log(out.String())
	if n := strings.Count(out.String(), "300 frames in order, every checksum right"); n != 3 {
		t.Errorf("%d subscribers report every frame, want 3", n)
	}
	if !strings.Contains(out.String(), "to 3 subscribers") {
		t.Error("publisher did not deliver to 3 subscribers")
	}
}
