package topics

import "strings"

// Match reports whether name matches pattern (see "Matching" in the package
// documentation). Both are assumed valid, pattern as by [ValidatePattern] and
// name as by [ValidateName]; for invalid input the result is unspecified, but
// Match does not panic. Match does not allocate and is safe for concurrent
// use.
func Match(pattern, name string) bool {
	p, n := 0, 0 // offsets of the current token in pattern and name
	for {
		if p < len(pattern) && (p+1 == len(pattern) || pattern[p+1] == '.') &&
			(pattern[p] == '*' || pattern[p] == '>') {
			if pattern[p] == '>' {
				return true // the name has at least the current token left
			}
			for n < len(name) && name[n] != '.' {
				n++
			}
			p++
		} else {
			for p < len(pattern) && n < len(name) && pattern[p] == name[n] && pattern[p] != '.' {
				p++
				n++
			}
			if (p < len(pattern) && pattern[p] != '.') || (n < len(name) && name[n] != '.') {
				return false // the tokens differ
			}
		}
		if p == len(pattern) || n == len(name) {
			return p == len(pattern) && n == len(name)
		}
		p, n = p+1, n+1
	}
}

// IsLiteral reports whether pattern contains no wildcards. A valid literal
// pattern matches exactly one name, itself. IsLiteral does not allocate and is
// safe for concurrent use.
func IsLiteral(pattern string) bool {
	return !strings.ContainsAny(pattern, "*>")
}

// MatchValid is Match for a pattern not yet known to be valid (one read from shared memory):
// an invalid pattern matches nothing.
func MatchValid(pattern, name string) bool {
	return ValidatePattern(pattern) == nil && Match(pattern, name)
}
