package topics

import (
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// refValid is a slow, obviously-correct validator that FuzzValidateName and
// FuzzValidatePattern check validate against.
func refValid(s string, pattern bool) bool {
	if s == "" || len(s) > MaxNameLen || !utf8.ValidString(s) {
		return false
	}
	toks := strings.Split(s, ".")
	if len(toks) > MaxTokens {
		return false
	}
	for i, t := range toks {
		if t == "" {
			return false
		}
		for _, r := range t {
			if unicode.IsSpace(r) || !unicode.IsGraphic(r) || unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r) {
				return false
			}
		}
		if strings.ContainsAny(t, "*>") {
			last := i == len(toks)-1
			if !pattern || t != "*" && (t != ">" || !last) {
				return false
			}
		}
	}
	return true
}

func TestValidate(t *testing.T) {
	long := strings.Repeat("a", MaxNameLen)
	tokens32 := strings.Repeat("a.", MaxTokens-1) + "a"
	tests := []struct {
		s       string
		pattern bool
		pos     int
		reason  string // "" means valid
	}{
		// Valid names, also valid as patterns.
		{s: "a"},
		{s: "orders.eu.created"},
		{s: "Ünïcödé.名前.😀"},
		{s: "a-b_c.d~e!f#g$h%i&j(k)l+m,n/o:p;q<r=s?t@u[v]w^x`y{z|}"},
		{s: "\uFFFD"}, // an encoded replacement character is valid UTF-8
		{s: long},
		{s: tokens32},
		{s: "a.b", pattern: true},
		// Valid patterns only.
		{s: "*", pattern: true},
		{s: ">", pattern: true},
		{s: "a.*", pattern: true},
		{s: "*.b", pattern: true},
		{s: "a.*.c", pattern: true},
		{s: "a.>", pattern: true},
		{s: "*.*.>", pattern: true},
		{s: strings.Repeat("*.", MaxTokens-1) + ">", pattern: true},

		// Empty name.
		{s: "", pos: -1, reason: "empty"},
		{s: "", pattern: true, pos: -1, reason: "empty"},
		// Empty token.
		{s: ".", pos: 0, reason: "empty token (leading '.')"},
		{s: ".a", pos: 0, reason: "empty token (leading '.')"},
		{s: "a.", pos: 1, reason: "empty token (trailing '.')"},
		{s: "a.b.", pattern: true, pos: 3, reason: "empty token (trailing '.')"},
		{s: "a..b", pos: 2, reason: "empty token ('..')"},
		{s: "*..>", pattern: true, pos: 2, reason: "empty token ('..')"},
		// Wildcard in a name.
		{s: "*", pos: 0, reason: "wildcard '*' not allowed in a name"},
		{s: "a.>", pos: 2, reason: "wildcard '>' not allowed in a name"},
		{s: "a.b*", pos: 3, reason: "wildcard '*' not allowed in a name"},
		// Wildcard not a whole token.
		{s: "a.b*", pattern: true, pos: 3, reason: "'*' must be a whole token"},
		{s: "a.*b", pattern: true, pos: 2, reason: "'*' must be a whole token"},
		{s: "**", pattern: true, pos: 0, reason: "'*' must be a whole token"},
		{s: "a.b>", pattern: true, pos: 3, reason: "'>' must be a whole token"},
		{s: ">b", pattern: true, pos: 0, reason: "'>' must be a whole token"},
		{s: "*>", pattern: true, pos: 0, reason: "'*' must be a whole token"},
		// '>' not last.
		{s: "a.>.b", pattern: true, pos: 2, reason: "'>' must be the last token"},
		{s: ">.>", pattern: true, pos: 0, reason: "'>' must be the last token"},
		// Whitespace and control characters.
		{s: "a b", pos: 1, reason: "whitespace U+0020 not allowed"},
		{s: "a.\tb", pattern: true, pos: 2, reason: "whitespace U+0009 not allowed"},
		{s: "a\n", pos: 1, reason: "whitespace U+000A not allowed"},
		{s: "a\u00a0b", pos: 1, reason: "whitespace U+00A0 not allowed"},
		{s: "a\u3000b", pos: 1, reason: "whitespace U+3000 not allowed"},
		{s: "\x00", pos: 0, reason: "control character U+0000 not allowed"},
		{s: "a\x1b", pos: 1, reason: "control character U+001B not allowed"},
		{s: "a\x7f", pos: 1, reason: "control character U+007F not allowed"},
		{s: "é\u0085", pos: 2, reason: "whitespace U+0085 not allowed"},
		// Invisible, format, private-use and unassigned code points: a name that looks like
		// another must not be another.
		{s: "a.\u200bb", pos: 2, reason: "invisible format character U+200B not allowed"},
		{s: "a\u200d", pattern: true, pos: 1, reason: "invisible format character U+200D not allowed"},
		{s: "\ufeffa", pos: 0, reason: "invisible format character U+FEFF not allowed"},
		{s: "ab\u202e", pos: 2, reason: "invisible format character U+202E not allowed"},
		{s: "a\u00ad", pos: 1, reason: "invisible format character U+00AD not allowed"},
		{s: "é\u3164", pos: 2, reason: "invisible character U+3164 not allowed"},
		{s: "a\u034f", pos: 1, reason: "invisible character U+034F not allowed"},
		{s: "a\ue000", pos: 1, reason: "private-use character U+E000 not allowed"},
		{s: "a\U000e0001", pos: 1, reason: "invisible format character U+E0001 not allowed"},
		{s: "a\u0378", pos: 1, reason: "unassigned code point U+0378 not allowed"},
		{s: "a\u2028", pos: 1, reason: "whitespace U+2028 not allowed"},
		{s: "\u0090", pos: 0, reason: "control character U+0090 not allowed"},
		// Too long.
		{s: long + "a", pos: -1, reason: "too long: 129 bytes, max 128"},
		{s: strings.Repeat("a.", 100), pos: -1, reason: "too long: 200 bytes, max 128"},
		// Too many tokens.
		{s: tokens32 + ".a", pos: len(tokens32), reason: "more than 32 tokens"},
		{s: strings.Repeat("*.", MaxTokens) + ">", pattern: true, pos: 2*MaxTokens - 1, reason: "more than 32 tokens"},
		// Invalid UTF-8.
		{s: "a\xff", pos: 1, reason: "invalid UTF-8"},
		{s: "ab.\xc3", pattern: true, pos: 3, reason: "invalid UTF-8"},
		{s: "\xed\xa0\x80", pos: 0, reason: "invalid UTF-8"}, // surrogate half
		// The first fault by position wins.
		{s: "a b..", pos: 1, reason: "whitespace U+0020 not allowed"},
		{s: "a..b c", pos: 2, reason: "empty token ('..')"},
	}
	for _, tt := range tests {
		validate := ValidateName
		if tt.pattern {
			validate = ValidatePattern
		}
		err := validate(tt.s)
		if tt.reason == "" {
			if err != nil {
				t.Errorf("validate(%q, pattern=%v) = %v, want nil", tt.s, tt.pattern, err)
			}
			continue
		}
		var ne *NameError
		if !errors.As(err, &ne) {
			t.Errorf("validate(%q, pattern=%v) = %v, want *NameError", tt.s, tt.pattern, err)
			continue
		}
		if !errors.Is(err, ErrInvalidName) {
			t.Errorf("validate(%q, pattern=%v): errors.Is(err, ErrInvalidName) = false", tt.s, tt.pattern)
		}
		want := NameError{Name: tt.s, Pattern: tt.pattern, Pos: tt.pos, Reason: tt.reason}
		if *ne != want {
			t.Errorf("validate(%q, pattern=%v) = %+v, want %+v", tt.s, tt.pattern, *ne, want)
		}
	}
}

func TestNameErrorMessage(t *testing.T) {
	tests := []struct {
		s       string
		pattern bool
		want    string
	}{
		{"a.>.b", true, `topics: invalid pattern "a.>.b": '>' must be the last token (byte 2)`},
		{"a.b*", false, `topics: invalid name "a.b*": wildcard '*' not allowed in a name (byte 3)`},
		{"", false, `topics: invalid name "": empty`},
		{"a..b", true, `topics: invalid pattern "a..b": empty token ('..') (byte 2)`},
		{"a\xff", false, `topics: invalid name "a\xff": invalid UTF-8 (byte 1)`},
		{strings.Repeat("x", 200), false,
			`topics: invalid name "` + strings.Repeat("x", MaxNameLen) + `"...: too long: 200 bytes, max 128`},
	}
	for _, tt := range tests {
		validate := ValidateName
		if tt.pattern {
			validate = ValidatePattern
		}
		err := validate(tt.s)
		if err == nil {
			t.Errorf("validate(%q, pattern=%v) = nil, want error", tt.s, tt.pattern)
			continue
		}
		if got := err.Error(); got != tt.want {
			t.Errorf("validate(%q, pattern=%v).Error() =\n\t%s\nwant\n\t%s", tt.s, tt.pattern, got, tt.want)
		}
	}
	if got, want := ErrInvalidName.Error(), "topics: invalid name"; got != want {
		t.Errorf("ErrInvalidName.Error() = %q, want %q", got, want)
	}
}

func TestValidateAllocs(t *testing.T) {
	name := "orders.eu.fr.created.2024"
	pattern := "orders.*.fr.>"
	if n := testing.AllocsPerRun(100, func() {
		if ValidateName(name) != nil {
			t.Fatal("unexpected error")
		}
	}); n != 0 {
		t.Errorf("ValidateName allocates %v times per call, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() {
		if ValidatePattern(pattern) != nil {
			t.Fatal("unexpected error")
		}
	}); n != 0 {
		t.Errorf("ValidatePattern allocates %v times per call, want 0", n)
	}
}

var validateSeeds = []string{
	"", ".", "a", "a.b.c", "a..b", "a.", ".a", "*", ">", "a.*.c", "a.>", "a.>.b",
	"a.b*", "*>", "a b", "a\tb", "a\x00", "a\xff", "é.名前", "a\u00a0b",
	strings.Repeat("a", MaxNameLen+1), strings.Repeat("a.", MaxTokens) + "a",
}

// checkValidate checks validate(s, pattern) against refValid and checks the
// shape of any error.
func checkValidate(t *testing.T, s string, pattern bool) {
	var err error
	if pattern {
		err = ValidatePattern(s)
	} else {
		err = ValidateName(s)
	}
	if want := refValid(s, pattern); (err == nil) != want {
		t.Fatalf("validate(%q, pattern=%v) = %v, reference says valid=%v", s, pattern, err, want)
	}
	if err == nil {
		return
	}
	var ne *NameError
	if !errors.As(err, &ne) || !errors.Is(err, ErrInvalidName) {
		t.Fatalf("validate(%q, pattern=%v) = %#v, want *NameError wrapping ErrInvalidName", s, pattern, err)
	}
	if ne.Name != s || ne.Pattern != pattern || ne.Reason == "" || ne.Pos < -1 || ne.Pos >= len(s) {
		t.Fatalf("validate(%q, pattern=%v) = %+v: bad fields", s, pattern, *ne)
	}
	_ = ne.Error()
}

func FuzzValidateName(f *testing.F) {
	for _, s := range validateSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkValidate(t, s, false)
		if ValidateName(s) == nil {
			// Every name is also a literal pattern matching itself.
			if err := ValidatePattern(s); err != nil {
				t.Fatalf("ValidateName(%q) = nil but ValidatePattern = %v", s, err)
			}
			if !IsLiteral(s) || !Match(s, s) {
				t.Fatalf("valid name %q: IsLiteral = %v, Match(s, s) = %v", s, IsLiteral(s), Match(s, s))
			}
		}
	})
}

func FuzzValidatePattern(f *testing.F) {
	for _, s := range validateSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkValidate(t, s, true)
		if ValidatePattern(s) == nil && IsLiteral(s) {
			if err := ValidateName(s); err != nil {
				t.Fatalf("literal pattern %q is not a valid name: %v", s, err)
			}
		}
	})
}
