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

func TestSensors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out strings.Builder
	if err := run(ctx, &out, 2000); err != nil {
		t.Fatal(err)
	}
	t.Log(out.String())
	for _, want := range []string{
		"sensors.*.reading: 8000 readings", "line1 2000 in order", "yard 2000 in order",
		"sensors.line1.reading: 2000 readings",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}
