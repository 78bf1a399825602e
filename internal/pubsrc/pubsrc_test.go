package pubsrc

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/offq/offq/codec"
)

func TestGenerated(t *testing.T) {
	next := Generated(25)
	for i, want := range []string{"message 1 message 1 messa", "message 2 message 2 messa"} {
		if got, err := next(context.Background(), i); err != nil || string(got) != want {
			t.Errorf("message %d: %q, %v; want %q", i, got, err, want)
		}
	}
	if got, _ := Fixed([]byte("x"))(context.Background(), 7); string(got) != "x" {
		t.Errorf("Fixed: %q", got)
	}
}

func TestLines(t *testing.T) {
	ctx := context.Background()
	next, closeSrc, err := Lines("-", strings.NewReader("a\n\nbc\n"), 16)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := 0; ; i++ {
		m, err := next(ctx, i)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(m))
	}
	closeSrc()
	if strings.Join(got, "|") != "a||bc" {
		t.Errorf("lines %q", got)
	}

	path := filepath.Join(t.TempDir(), "in")
	if err := os.WriteFile(path, []byte("short\n"+strings.Repeat("x", 70<<10)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	next, closeSrc, err = Lines(path, nil, 16)
	if err != nil {
		t.Fatal(err)
	}
	defer closeSrc()
	if m, err := next(ctx, 0); err != nil || string(m) != "short" {
		t.Errorf("first line %q, %v", m, err)
	}
	// (the scanner starts with 64 KiB: only a line that outgrows it is measured against largest)
	if _, err := next(ctx, 1); err == nil || !strings.Contains(err.Error(), "longer than the largest buffer (16 bytes)") {
		t.Errorf("long line: %v", err)
	}
	if _, _, err := Lines(filepath.Join(t.TempDir(), "missing"), nil, 16); err == nil {
		t.Error("a missing file opened")
	}
}

func TestJSON(t *testing.T) {
	j := NewJSON(1 << 20)
	b, err := j.Encode([]byte(`{"i": -3, "u": 18446744073709551615, "f": 1.5, "s": ["x", true, null]}`))
	if err != nil {
		t.Fatal(err)
	}
	var v any
	var mp codec.Msgpack[any]
	if err := mp.Decode(b, &v); err != nil {
		t.Fatal(err)
	}
	m, ok := v.(map[string]any)
	if !ok || m["f"] != 1.5 || len(m) != 4 {
		t.Errorf("decoded %#v", v)
	}
	for _, bad := range []string{`{`, `1 2`, `18446744073709551616`, `1e400`} {
		if _, err := j.Encode([]byte(bad)); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
	if _, err := NewJSON(8).Encode([]byte(`"a string longer than eight bytes"`)); err == nil {
		t.Error("a message larger than the limit encoded")
	}
}
