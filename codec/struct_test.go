package codec

import (
	"errors"
	"reflect"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/offq/offq/internal/shm"
)

type vec3 struct{ X, Y, Z float32 }

// flat is pointer-free, with nested structs and arrays, and atomics (which are structs of
// integers).
type flat struct {
	ID      uint64
	Pos     vec3
	Samples [4]vec3
	Name    [12]byte
	Count   atomic.Int64
	C       complex128
	Ok      bool
}

func TestStructAcceptsPointerFree(t *testing.T) {
	for _, fp := range []func() (uint64, error){
		NewStruct[flat]().Fingerprint,
		NewStruct[uint32]().Fingerprint,
		NewStruct[[16]float64]().Fingerprint,
		NewStruct[struct {
			A [0]int32
			B int8
		}]().Fingerprint,
	} {
		if v, err := fp(); err != nil || v == 0 {
			t.Errorf("%#x, %v", v, err)
		}
	}
}

type sensorReading struct {
	Seq     uint64
	Samples [3]struct {
		At   int64
		Note string
	}
}

func TestStructRefusesPointers(t *testing.T) {
	type withPtr struct{ P *int }
	type withMap struct {
		A int
		M map[string]int
	}
	type withIface struct{ V any }
	type withChan struct{ C chan int }
	type withFunc struct{ F func() }
	type withUintptr struct{ U uintptr }
	type withAtomicPointer struct{ P atomic.Pointer[int] }
	type withSlice struct{ S []byte }
	type inner struct{ Tags string }
	type nested struct {
		A     int32
		Inner inner
	}
	cases := []struct {
		fp      func() (uint64, error)
		path    string
		message string
	}{
		{NewStruct[withPtr]().Fingerprint, "codec.withPtr.P", "codec.withPtr.P: *int (a pointer)"},
		{NewStruct[withMap]().Fingerprint, "codec.withMap.M", "map[string]int (a map is a pointer)"},
		{NewStruct[withIface]().Fingerprint, "codec.withIface.V", "interface {} (an interface holds a pointer)"},
		{NewStruct[withChan]().Fingerprint, "codec.withChan.C", "chan int (a chan is a pointer)"},
		{NewStruct[withFunc]().Fingerprint, "codec.withFunc.F", "func() (a func is a pointer)"},
		{NewStruct[withUintptr]().Fingerprint, "codec.withUintptr.U", "uintptr (an address means nothing in another process)"},
		{NewStruct[withAtomicPointer]().Fingerprint, "codec.withAtomicPointer.P._[]", "*int (a pointer)"},
		{NewStruct[withSlice]().Fingerprint, "codec.withSlice.S", "[]uint8 (a slice points to its elements)"},
		{NewStruct[nested]().Fingerprint, "codec.nested.Inner.Tags", "codec.nested.Inner.Tags: string (a string points to its bytes)"},
		{NewStruct[sensorReading]().Fingerprint, "codec.sensorReading.Samples[].Note", "codec.sensorReading.Samples[].Note: string"},
		{NewStruct[string]().Fingerprint, "string", "cannot carry string: string: string"},
		{NewStruct[*flat]().Fingerprint, "*codec.flat", "(a pointer)"},
		{NewStruct[struct{}]().Fingerprint, "struct {}", "size 0"},
		{NewStruct[any]().Fingerprint, "interface {}", "(an interface holds a pointer)"},
	}
	for _, c := range cases {
		fp, err := c.fp()
		var te *TypeError
		if !errors.As(err, &te) || fp != 0 {
			t.Errorf("%s: %#x, %v: want a *TypeError", c.path, fp, err)
			continue
		}
		if te.Path != c.path || !strings.Contains(err.Error(), c.message) || !strings.HasPrefix(err.Error(), "codec: struct codec cannot carry ") {
			t.Errorf("got path %q, error %q; want path %q, error containing %q", te.Path, err, c.path, c.message)
		}
	}
}

func TestStructRefusedCodecFailsEverywhere(t *testing.T) {
	s := NewStruct[sensorReading]()
	b := make([]byte, 1024)
	var v sensorReading
	if _, err := s.Encode(b, &v); !errors.Is(err, ErrUnsupportedType) {
		t.Error("Encode:", err)
	}
	if err := s.Decode(b, &v); !errors.Is(err, ErrUnsupportedType) {
		t.Error("Decode:", err)
	}
	if _, err := s.View(b); !errors.Is(err, ErrUnsupportedType) {
		t.Error("View:", err)
	}
	var zero Struct[flat]
	if _, err := zero.Fingerprint(); err == nil {
		t.Error("zero Struct: no error")
	}
	if _, err := zero.View(b); err == nil {
		t.Error("zero Struct View: no error")
	}
}

// alignedBuf returns n bytes of page-aligned memory, as a loaned payload is 32-byte aligned.
// (Package codec does not import unsafe, not even in tests.)
func alignedBuf(n int) []byte {
	page := syscall.Getpagesize()
	mem, err := syscall.Mmap(-1, 0, (max(n, 1)+page-1)/page*page, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		panic(err)
	}
	return mem[:n]
}

func sizeOf[T any]() int { return int(reflect.TypeFor[T]().Size()) }

func TestStructInPlace(t *testing.T) {
	s := NewStruct[flat]()
	size := sizeOf[flat]()
	if s.Size() != size || s.SizeHint(nil) != size || s.Name() != "struct" {
		t.Fatalf("Size %d SizeHint %d Name %q", s.Size(), s.SizeHint(nil), s.Name())
	}
	buf := alignedBuf(size + 8)
	p, err := s.View(buf)
	if err != nil {
		t.Fatal(err)
	}
	if reflect.ValueOf(p).Pointer() != reflect.ValueOf(&buf[0]).Pointer() {
		t.Fatal("View does not alias the buffer")
	}
	p.ID, p.Pos.Y, p.Samples[3].Z, p.Ok = 7, 1.5, -2, true
	p.Count.Store(42)
	var got flat
	if err := s.Decode(buf, &got); err != nil {
		t.Fatal(err)
	}
	if got.ID != 7 || got.Pos.Y != 1.5 || got.Samples[3].Z != -2 || !got.Ok || got.Count.Load() != 42 {
		t.Fatalf("Decode: %+v", &got)
	}
	src := flat{ID: 9, Name: [12]byte{'a'}}
	dst := alignedBuf(size)
	n, err := s.Encode(dst, &src)
	if err != nil || n != size {
		t.Fatalf("Encode: %d, %v", n, err)
	}
	if q, _ := s.View(dst); q.ID != 9 || q.Name[0] != 'a' {
		t.Fatalf("Encode wrote %+v", q)
	}
	if _, err := s.Encode(dst[:size-1], &src); err != ErrShortBuffer {
		t.Fatalf("Encode into a short buffer: %v", err)
	}
	if _, err := s.View(buf[:size-1]); !errors.Is(err, ErrMalformed) || !errors.Is(err, shm.ErrBadView) {
		t.Fatalf("View of a short buffer: %v", err)
	}
	if err := s.Decode(buf[1:], &got); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Decode of a misaligned buffer: %v", err)
	}
}

func TestStructViewAllocatesNothing(t *testing.T) {
	s := NewStruct[flat]()
	buf := alignedBuf(sizeOf[flat]())
	var sink *flat
	if n := testing.AllocsPerRun(1000, func() { sink, _ = s.View(buf) }); n != 0 {
		t.Fatalf("View: %v allocations", n)
	}
	var v flat
	if n := testing.AllocsPerRun(1000, func() { s.Encode(buf, &v); s.Decode(buf, &v) }); n != 0 {
		t.Fatalf("Encode+Decode: %v allocations", n)
	}
	_ = sink
}

func TestStructFingerprintIsLayout(t *testing.T) {
	fp := func(c interface{ Fingerprint() (uint64, error) }) uint64 { v, _ := c.Fingerprint(); return v }
	type a struct{ X, Y int32 }
	type b struct{ X, Y int32 } // a byte-identical copy under another name
	type c struct{ X, Z int32 }
	if fp(NewStruct[a]()) != fp(NewStruct[b]()) {
		t.Error("byte-identical types of different names have different fingerprints")
	}
	if fp(NewStruct[a]()) == fp(NewStruct[c]()) {
		t.Error("types with different field names share a fingerprint")
	}
	if fp(NewMsgpack[a]()) != fp(NewMsgpack[c]()) || fp(NewMsgpack[a]()) != fp(NewMsgpack[map[string]any]()) {
		t.Error("msgpack (self-describing) fingerprints differ by type")
	}
	if fp(NewMsgpack[a](StrictType())) != fp(NewMsgpack[b](StrictType())) || fp(NewMsgpack[a](StrictType())) == fp(NewMsgpack[c](StrictType())) {
		t.Error("strict msgpack fingerprints are not the layout's")
	}
	if fp(NewStruct[a]()) != TypeFingerprint("struct", reflect.TypeFor[a]()) {
		t.Error("Struct's fingerprint is not TypeFingerprint")
	}
	if fp(NewStruct[a]()) == fp(NewMsgpack[a]()) || fp(NewStruct[a]()) == fp(NewMsgpack[a](StrictType())) {
		t.Error("two codecs of one type share a fingerprint")
	}
}
