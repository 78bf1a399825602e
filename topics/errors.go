package topics

import (
	"errors"
	"fmt"
)

// ErrInvalidName is wrapped by every error that reports an invalid topic name
// or pattern; test for it with errors.Is.
var ErrInvalidName = errors.New("topics: invalid name")

// NameError describes why a topic name or pattern is invalid. It is returned
// by [ValidateName] and [ValidatePattern] and unwraps to [ErrInvalidName].
type NameError struct {
	// Name is the rejected name or pattern, verbatim.
	Name string
	// Pattern is true if Name was validated as a subscription pattern, false
	// if as a concrete topic name.
	Pattern bool
	// Pos is the byte offset in Name of the offending byte, or -1 when the
	// fault lies with Name as a whole (empty or too long).
	Pos int
	// Reason says what is wrong, e.g. "'>' must be the last token".
	Reason string
}

// Error returns a message such as
//
//	topics: invalid pattern "a.>.b": '>' must be the last token (byte 2)
//
// Names longer than [MaxNameLen] are shortened in the message.
func (e *NameError) Error() string {
	kind := "name"
	if e.Pattern {
		kind = "pattern"
	}
	name, more := e.Name, ""
	if len(name) > MaxNameLen {
		name, more = name[:MaxNameLen], "..."
	}
	if e.Pos < 0 {
		return fmt.Sprintf("topics: invalid %s %q%s: %s", kind, name, more, e.Reason)
	}
	return fmt.Sprintf("topics: invalid %s %q%s: %s (byte %d)", kind, name, more, e.Reason, e.Pos)
}

// Unwrap returns [ErrInvalidName].
func (e *NameError) Unwrap() error { return ErrInvalidName }
