package codec

import (
	"reflect"
	"strconv"
	"strings"
)

var bytesType = reflect.TypeFor[[]byte]()

// TypeFingerprint returns a 64-bit identity of type t as carried by the codec called codec:
// FNV-1a 64 of a canonical description holding the codec's name, t's qualified name (package
// path and name), size and alignment, and its layout, recursively: for a struct each field's
// name, msgpack tag, offset and type; for an array its length; for other composite types their
// element, key and method types; for every basic type its kind and size. It is the same in
// every process and every build of the same type on the same architecture, differs when any
// of those change, and is never 0 (the topic table's "nothing recorded").
//
// Two different codecs of the same type have different fingerprints, so a topic carries one
// encoding.
func TypeFingerprint(codec string, t reflect.Type) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range []byte(describe(codec, t)) {
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
	b.WriteString("offq-type-v1 codec=")
	b.WriteString(codec)
	if t == nil {
		b.WriteString(" type=nil")
		return b.String()
	}
	b.WriteString(" type=")
	b.WriteString(qualifiedName(t))
	b.WriteString(" size=")
	b.WriteString(strconv.FormatUint(uint64(t.Size()), 10))
	b.WriteString(" align=")
	b.WriteString(strconv.Itoa(t.Align()))
	b.WriteString(" layout=")
	d := describer{b: &b, open: map[reflect.Type]bool{}}
	d.typ(t)
	return b.String()
}

// qualifiedName is "path/to/pkg.Name" for a named type, the name for a predeclared one, and
// t.String() for an unnamed one.
func qualifiedName(t reflect.Type) string {
	switch {
	case t.Name() == "":
		return t.String()
	case t.PkgPath() == "":
		return t.Name()
	}
	return t.PkgPath() + "." + t.Name()
}

type describer struct {
	b    *strings.Builder
	open map[reflect.Type]bool // named types being described: a recursive type stops at its name
}

func (d *describer) typ(t reflect.Type) {
	b := d.b
	if t.Name() != "" && t.PkgPath() != "" {
		b.WriteString(qualifiedName(t))
		if d.open[t] {
			return
		}
		d.open[t] = true
		defer delete(d.open, t)
		b.WriteByte('=')
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
