package topics

import (
	"strings"
	"testing"
)

// refMatch is a slow, obviously-correct matcher that Match is checked
// against.
func refMatch(pattern, name string) bool {
	pt, nt := strings.Split(pattern, "."), strings.Split(name, ".")
	for i, p := range pt {
		if p == ">" {
			return i == len(pt)-1 && len(nt) > i
		}
		if i >= len(nt) || p != "*" && p != nt[i] {
			return false
		}
	}
	return len(pt) == len(nt)
}

var matchTests = []struct {
	pattern, name string
	want          bool
}{
	{"a", "a", true},
	{"a", "b", false},
	{"a", "ab", false},
	{"ab", "a", false},
	{"a.b.c", "a.b.c", true},
	{"a.b.c", "a.b", false},
	{"a.b", "a.b.c", false},
	{"a.b.c", "a.x.c", false},
	{"a.bc", "a.b.c", false},
	{"a.b.c", "a.bc", false},
	{"*", "a", true},
	{"*", "a.b", false},
	{"*.b", "a.b", true},
	{"*.b", "a.c", false},
	{"a.*", "a", false},
	{"a.*", "a.b", true},
	{"a.*", "a.b.c", false},
	{"a.*.c", "a.b.c", true},
	{"a.*.c", "a.bb.c", true},
	{"a.*.c", "a.b.d", false},
	{"a.*.c", "a.b.x.c", false},
	{"*.*", "a.b", true},
	{"*.*", "a", false},
	{">", "a", true},
	{">", "a.b.c", true},
	{"a.>", "a", false},
	{"a.>", "a.b", true},
	{"a.>", "a.b.c.d", true},
	{"a.>", "b.c", false},
	{"a.>", "ab.c", false},
	{"*.>", "a", false},
	{"*.>", "a.b", true},
	{"a.*.>", "a.b.c", true},
	{"a.*.>", "a.b", false},
	{"orders.*.created", "orders.eu.created", true},
	{"orders.*.created", "orders.eu.fr.created", false},
	{"é.*", "é.名前", true},
}

func TestMatch(t *testing.T) {
	for _, tt := range matchTests {
		if err := ValidatePattern(tt.pattern); err != nil {
			t.Fatalf("bad test pattern: %v", err)
		}
		if err := ValidateName(tt.name); err != nil {
			t.Fatalf("bad test name: %v", err)
		}
		if got := Match(tt.pattern, tt.name); got != tt.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
		if got := refMatch(tt.pattern, tt.name); got != tt.want {
			t.Errorf("refMatch(%q, %q) = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
}

func TestMatchAllocs(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() {
		for _, tt := range matchTests {
			if Match(tt.pattern, tt.name) != tt.want {
				t.Fatal("wrong result")
			}
		}
	}); n != 0 {
		t.Errorf("Match allocates %v times per call, want 0", n)
	}
}

func TestIsLiteral(t *testing.T) {
	tests := []struct {
		pattern string
		want    bool
	}{
		{"a", true},
		{"a.b.c", true},
		{"é.名前", true},
		{"*", false},
		{">", false},
		{"a.*.c", false},
		{"a.>", false},
	}
	for _, tt := range tests {
		if got := IsLiteral(tt.pattern); got != tt.want {
			t.Errorf("IsLiteral(%q) = %v, want %v", tt.pattern, got, tt.want)
		}
	}
}

func FuzzMatch(f *testing.F) {
	for _, tt := range matchTests {
		f.Add(tt.pattern, tt.name)
	}
	f.Add("", "")
	f.Add("a.", "a.")
	f.Add("..", "a")
	f.Add(">.a", "a")
	f.Fuzz(func(t *testing.T, pattern, name string) {
		got := Match(pattern, name) // must not panic, whatever the input
		if ValidatePattern(pattern) != nil || ValidateName(name) != nil {
			return
		}
		if want := refMatch(pattern, name); got != want {
			t.Fatalf("Match(%q, %q) = %v, reference says %v", pattern, name, got, want)
		}
		if IsLiteral(pattern) && got != (pattern == name) {
			t.Fatalf("literal Match(%q, %q) = %v", pattern, name, got)
		}
	})
}

// TestMatchExhaustive checks Match against refMatch for every pattern and
// name of up to four tokens over a small alphabet.
func TestMatchExhaustive(t *testing.T) {
	all := func(alphabet []string) []string {
		var out, level []string
		level = []string{""}
		for range 4 {
			var next []string
			for _, prefix := range level {
				for _, tok := range alphabet {
					s := tok
					if prefix != "" {
						s = prefix + "." + tok
					}
					next = append(next, s)
				}
			}
			out = append(out, next...)
			level = next
		}
		return out
	}
	var patterns []string
	for _, p := range all([]string{"a", "ab", "*", ">"}) {
		if ValidatePattern(p) == nil {
			patterns = append(patterns, p)
		}
	}
	names := all([]string{"a", "ab", "b"})
	for _, p := range patterns {
		for _, n := range names {
			if got, want := Match(p, n), refMatch(p, n); got != want {
				t.Errorf("Match(%q, %q) = %v, reference says %v", p, n, got, want)
			}
		}
	}
}
