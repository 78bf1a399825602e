package codec

import (
	"errors"
	"fmt"
	"reflect"
)

var (
	// ErrShortBuffer is returned by Encode when the encoding of the value does not fit the
	// buffer it was given. A publisher then loans a buffer of the next size class and encodes
	// again. It is a preallocated value: the short-buffer path allocates nothing.
	ErrShortBuffer = errors.New("codec: encoding does not fit the buffer")

	// ErrUnsupportedType is wrapped by the *TypeError a codec reports for a type it cannot
	// carry, such as a type holding a pointer given to Struct.
	ErrUnsupportedType = errors.New("codec: unsupported type")

	// ErrMalformed is wrapped by the errors of Decode and MsgpackToJSON when the bytes are not
	// a valid encoding: truncated, of the wrong kind, or nested too deeply.
	ErrMalformed = errors.New("codec: malformed message")
)

// TypeError reports a type that a codec cannot carry, and the part of it that is to blame.
type TypeError struct {
	Codec  string       // the codec's name
	Type   reflect.Type // the type given to the codec
	Path   string       // the offending field, as "sensors.Reading.Tags" or "sensors.Reading.Samples[].Name"
	Field  reflect.Type // the offending field's type
	Reason string       // why the field's type cannot be carried
}

func (e *TypeError) Error() string {
	return fmt.Sprintf("codec: %s codec cannot carry %s: %s: %s (%s)", e.Codec, e.Type, e.Path, e.Field, e.Reason)
}

// Unwrap returns ErrUnsupportedType.
func (e *TypeError) Unwrap() error { return ErrUnsupportedType }
