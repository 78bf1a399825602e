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

func TestService(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out strings.Builder
	if err := run(ctx, &out, 2, 3, 300); err != nil {
		t.Fatal(err)
	}
	t.Log(out.String())
	if n := strings.Count(out.String(), "300 requests answered and checked"); n != 3 {
		t.Errorf("%d clients report every request answered, want 3", n)
	}
}
