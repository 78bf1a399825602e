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
