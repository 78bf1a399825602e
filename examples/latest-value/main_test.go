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

func TestLatestValue(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out strings.Builder
	if err := run(ctx, &out, 200); err != nil {
		t.Fatal(err)
	}
	t.Log(out.String())
	for _, want := range []string{
		"got at once: plant.pump1.status #200 ", "got at once: plant.pump2.status #200 ",
		"received live: plant.pump1.status #201 ",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}
