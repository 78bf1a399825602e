package codec

import (
	"errors"
	"fmt"
	"reflect"

	"github.com/offq/offq/internal/shm"
)

// Struct is the zero-copy codec for pointer-free fixed-size types: a struct, array or number
// whose every field, at any depth, is a boolean, an integer, a float or a complex number (or
// an array or struct of those). Its encoding is the value's own memory, in the machine's byte
// order and Go's layout: a publisher fills a *T that lives in the message buffer
// (bus.TypedPublisher.Loan), and a subscriber reads the message through a read-only *T over
// the buffer (bus.TypedMessage.View). Nothing is encoded or decoded, and no byte is copied.
//
// Pointers, slices, strings, maps, interfaces, channels, functions and uintptrs cannot be
// carried: an address means nothing in another process, and shared memory is invisible to
// the garbage collector. NewStruct finds them with reflect, once; the first Fingerprint call
// (which bus makes when a publisher or subscription is created) reports the offending field
// as a *TypeError, such as
//
//	codec: struct codec cannot carry sensors.Reading: sensors.Reading.Tags: string (a string points to its bytes)
//
// Use NewStruct; the zero value reports an error. A *Struct is safe for concurrent use.
type Struct[T any] struct {
	size int
	fp   uint64
	err  error
}

var _ InPlace[struct{ X int }] = (*Struct[struct{ X int }])(nil)

var errStructZero = errors.New("codec: struct codec not made by NewStruct")

// NewStruct returns the Struct codec of T. If T cannot be carried, the codec's Fingerprint,
// Encode, Decode and View return the error naming the offending field.
func NewStruct[T any]() *Struct[T] {
	t := reflect.TypeFor[T]()
	s := &Struct[T]{size: int(t.Size())}
	if err := proveFlat("struct", t); err != nil {
		s.err = err
		return s
	}
	s.fp = TypeFingerprint("struct", t)
	return s
}

// Name returns "struct".
func (s *Struct[T]) Name() string { return "struct" }

// Fingerprint returns T's fingerprint under "struct", or the error that refuses T.
func (s *Struct[T]) Fingerprint() (uint64, error) {
	if err := s.check(); err != nil {
		return 0, err
	}
	return s.fp, nil
}

func (s *Struct[T]) check() error {
	switch {
	case s == nil || (s.fp == 0 && s.err == nil):
		return errStructZero
	case s.err != nil:
		return s.err
	}
	return nil
}

// Size returns the size of T in bytes: the length of every message.
func (s *Struct[T]) Size() int { return s.size }

// SizeHint returns the size of T.
func (s *Struct[T]) SizeHint(*T) int { return s.size }

// Encode copies *v into dst: the convenience path for a value that already exists in the
// process's memory. Loan a *T in the buffer instead to write it there directly.
func (s *Struct[T]) Encode(dst []byte, v *T) (int, error) {
	if err := s.check(); err != nil {
		return 0, err
	}
	if len(dst) < s.size {
		return 0, ErrShortBuffer
	}
	p, err := shm.View[T](dst)
	if err != nil {
		return 0, fmt.Errorf("codec: struct: %w", err)
	}
	*p = *v
	return s.size, nil
}

// Decode copies the value src holds into v.
func (s *Struct[T]) Decode(src []byte, v *T) error {
	p, err := s.View(src)
	if err != nil {
		return err
	}
	*v = *p
	return nil
}

// View returns the value b holds, in place: a *T aliasing b. It fails, wrapping ErrMalformed,
// if b is shorter than T or misaligned for it. It allocates nothing on success.
func (s *Struct[T]) View(b []byte) (*T, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	p, err := shm.View[T](b)
	if err != nil {
		return nil, fmt.Errorf("codec: struct: %w: %w", ErrMalformed, err)
	}
	return p, nil
}

// proveFlat returns a *TypeError naming the first part of t, depth first, that holds a
// pointer or has no fixed size, or nil if t is pointer-free.
func proveFlat(codec string, t reflect.Type) error {
	fail := func(path string, f reflect.Type, reason string) error {
		return &TypeError{Codec: codec, Type: t, Path: path, Field: f, Reason: reason}
	}
	if t == nil {
		return &TypeError{Codec: codec, Path: "<nil>", Reason: "an interface type holds a pointer"}
	}
	if t.Size() == 0 {
		return fail(t.String(), t, "a type of size 0 has nothing to carry")
	}
	var walk func(f reflect.Type, path string) error
	walk = func(f reflect.Type, path string) error {
		switch f.Kind() {
		case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
			reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
			return nil
		case reflect.Array:
			return walk(f.Elem(), path+"[]")
		case reflect.Struct:
			for i := range f.NumField() {
				fl := f.Field(i)
				if err := walk(fl.Type, path+"."+fl.Name); err != nil {
					return err
				}
			}
			return nil
		case reflect.Uintptr:
			return fail(path, f, "an address means nothing in another process")
		case reflect.Pointer, reflect.UnsafePointer:
			return fail(path, f, "a pointer")
		case reflect.String:
			return fail(path, f, "a string points to its bytes")
		case reflect.Slice:
			return fail(path, f, "a slice points to its elements")
		case reflect.Map:
			return fail(path, f, "a map is a pointer")
		case reflect.Interface:
			return fail(path, f, "an interface holds a pointer")
		case reflect.Chan, reflect.Func:
			return fail(path, f, "a "+f.Kind().String()+" is a pointer")
		}
		return fail(path, f, "kind "+f.Kind().String()+" is not supported")
	}
	return walk(t, t.String())
}
