package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/offq/offq/examples/internal/launch"
)

// TestMain plays a child's role when the example re-executes the test binary.
func TestMain(m *testing.M) {
	if launch.Role() != "" {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := child(ctx)
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

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
