package topics

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

const (
	// MaxNameLen is the maximum length of a topic name or pattern in bytes.
	MaxNameLen = 128
	// MaxTokens is the maximum number of '.'-separated tokens in a topic name
	// or pattern.
	MaxTokens = 32
)

// ValidateName reports whether name is a valid concrete topic name, the kind
// a message is published to: it may not contain the wildcards '*' and '>'.
// It returns nil or a [*NameError] wrapping [ErrInvalidName]. It does not
// allocate when name is valid and is safe for concurrent use.
func ValidateName(name string) error {
	if e := validate(name, false); e != nil {
		return e
	}
	return nil
}

// ValidatePattern reports whether pattern is a valid subscription pattern:
// a topic name in which '*' and '>' may appear as whole tokens, '>' only as
// the last one. It returns nil or a [*NameError] wrapping [ErrInvalidName].
// It does not allocate when pattern is valid and is safe for concurrent use.
func ValidatePattern(pattern string) error {
	if e := validate(pattern, true); e != nil {
		return e
	}
	return nil
}

// validate checks s in one pass and reports the first fault by position,
// after the whole-name checks (empty, too long). It returns a nil pointer,
// without allocating, when s is valid.
func validate(s string, pattern bool) *NameError {
	fail := func(pos int, reason string) *NameError {
		return &NameError{Name: s, Pattern: pattern, Pos: pos, Reason: reason}
	}
	if len(s) == 0 {
		return fail(-1, "empty")
	}
	if len(s) > MaxNameLen {
		return fail(-1, fmt.Sprintf("too long: %d bytes, max %d", len(s), MaxNameLen))
	}
	tokens, start := 1, 0 // start is the offset of the current token
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				return fail(i, "invalid UTF-8")
			}
			if reason := badRune(r); reason != "" {
				return fail(i, reason)
			}
			i += size
			continue
		}
		switch {
		case c == '.':
			switch {
			case i == 0:
				return fail(i, "empty token (leading '.')")
			case i == start:
				return fail(i, "empty token ('..')")
			}
			tokens++
			if tokens > MaxTokens {
				return fail(i, fmt.Sprintf("more than %d tokens", MaxTokens))
			}
			start = i + 1
		case c == '*' || c == '>':
			switch {
			case !pattern:
				return fail(i, fmt.Sprintf("wildcard '%c' not allowed in a name", c))
			case i != start || i+1 < len(s) && s[i+1] != '.':
				return fail(i, fmt.Sprintf("'%c' must be a whole token", c))
			case c == '>' && i+1 != len(s):
				return fail(i, "'>' must be the last token")
			}
		case c <= ' ' || c == 0x7f:
			return fail(i, badRune(rune(c)))
		}
		i++
	}
	if start == len(s) {
		return fail(len(s)-1, "empty token (trailing '.')")
	}
	return nil
}

// badRune returns why r may not appear in a name, or "" if it may. Beside whitespace and
// control characters it refuses what cannot be seen, so that a name that looks like another
// is not another: format characters (zero-width space and joiners, bidirectional controls,
// the byte-order mark, tags), the other default-ignorable code points (Hangul fillers,
// combining grapheme joiner), private-use and unassigned code points.
func badRune(r rune) string {
	switch {
	case unicode.IsSpace(r):
		return fmt.Sprintf("whitespace %U not allowed", r)
	case unicode.IsControl(r):
		return fmt.Sprintf("control character %U not allowed", r)
	case unicode.Is(unicode.Cf, r):
		return fmt.Sprintf("invisible format character %U not allowed", r)
	case unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r):
		return fmt.Sprintf("invisible character %U not allowed", r)
	case unicode.Is(unicode.Co, r):
		return fmt.Sprintf("private-use character %U not allowed", r)
	case !unicode.IsGraphic(r):
		return fmt.Sprintf("unassigned code point %U not allowed", r)
	}
	return ""
}
