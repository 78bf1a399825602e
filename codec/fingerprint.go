package codec

import (
	"reflect"
	"strconv"
	"strings"
)

var bytesType = reflect.TypeFor[[]byte]()

// TypeFingerprint returns a 64-bit identity of type t's layout as carried by the codec called
// codec: FNV-1a 64 of a canonical description holding the codec's name, t's size and
// alignment, and its layout, recursively: for a struct each field's name, msgpack tag, offset
// and type; for an array its length; for other composite types their element and key types;
// for every basic type its kind and size. Names of types and their package paths are not in
// it: a byte-identical copy of a struct in another package or module has the same
// fingerprint, because it is the same message. It is the same in every process and every
// build of the same layout on the same architecture, differs when any of those change, and is
// never 0 (the topic table's "nothing recorded").
//
// Two different codecs of the same type have different fingerprints, so a topic carries one
// encoding.
func TypeFingerprint(codec string, t reflect.Type) uint64 {
	return fnv64(describe(codec, t))
}

// fnv64 is FNV-1a 64 of s, never 0.
func fnv64(s string) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range []byte(s) {
		h ^= uint64(c)
		h *= 1099511628211
	}
	if h == 0 {
		h = 1
	}
	return h
}

// describe returns the canonical description TypeFingerprint hashes.
func describe(codec string, t reflect.Type) string {
	var b strings.Builder
	b.WriteString("offq-type-v2 codec=")
	b.WriteString(codec)
	if t == nil {
		b.WriteString(" type=nil")
		return b.String()
	}
	b.WriteString(" size=")
	b.WriteString(strconv.FormatUint(uint64(t.Size()), 10))
	b.WriteString(" align=")
	b.WriteString(strconv.Itoa(t.Align()))
	b.WriteString(" layout=")
	d := describer{b: &b}
	d.typ(t)
	return b.String()
}

type describer struct {
	b    *strings.Builder
	open []reflect.Type // composite types being described: a recursive type refers back by depth
}

func (d *describer) typ(t reflect.Type) {
	b := d.b
	for i, o := range d.open {
		if o == t {
			b.WriteString("^" + strconv.Itoa(len(d.open)-i)) // the type i levels up
			return
		}
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Array, reflect.Slice, reflect.Pointer, reflect.Map:
		d.open = append(d.open, t)
		defer func() { d.open = d.open[:len(d.open)-1] }()
	}
	switch t.Kind() {
	case reflect.Struct:
		b.WriteString("struct{")
		for i := range t.NumField() {
			f := t.Field(i)
			b.WriteString(f.Name)
			if tag, ok := f.Tag.Lookup("msgpack"); ok {
				b.WriteString(" " + strconv.Quote(tag))
			}
			if f.Anonymous {
				b.WriteString(" embedded")
			}
			b.WriteString(" @")
			b.WriteString(strconv.FormatUint(uint64(f.Offset), 10))
			b.WriteByte(' ')
			d.typ(f.Type)
			b.WriteByte(';')
		}
		b.WriteByte('}')
	case reflect.Array:
		b.WriteString("[" + strconv.Itoa(t.Len()) + "]")
		d.typ(t.Elem())
	case reflect.Slice:
		b.WriteString("[]")
		d.typ(t.Elem())
	case reflect.Pointer:
		b.WriteByte('*')
		d.typ(t.Elem())
	case reflect.Map:
		b.WriteString("map[")
		d.typ(t.Key())
		b.WriteByte(']')
		d.typ(t.Elem())
	case reflect.Chan:
		b.WriteString(t.ChanDir().String() + " ")
		d.typ(t.Elem())
	case reflect.Interface, reflect.Func:
		// Method and parameter types by their names: enough to tell interfaces apart, and
		// free of cycles.
		b.WriteString(t.Kind().String() + "(" + t.String() + ")")
	default:
		b.WriteString(t.Kind().String() + ":" + strconv.FormatUint(uint64(t.Size()), 10))
	}
}
