package codec

import (
	"reflect"
	"strconv"
	"testing"
)

type fpPoint struct {
	X, Y float64
	Tag  [4]byte `msgpack:"tag"`
}

type fpNode struct {
	Val      int32
	Next     *fpNode
	Children []fpNode
	Meta     map[string]any
}

// The description is part of the wire contract: processes built at different times must
// agree on it. Changing it needs a new version prefix (v2: no type or package names, so a
// byte-identical copy of a type in another module is the same message). The layout is the
// platform's: on a 32-bit one a float64 is 4-aligned and a pointer 4 bytes long, so a 32-bit
// process and a 64-bit one on the same host do not take each other's messages for the same
// type (a struct's bytes would not be).
func TestDescribeIsPinned(t *testing.T) {
	got := describe("struct", reflect.TypeFor[fpPoint]())
	want, wantFP := `offq-type-v2 codec=struct size=24 align=8 layout=`+
		`struct{X @0 float64:8;Y @8 float64:8;Tag "tag" @16 [4]uint8:1;}`, uint64(0x232eb58ace928f5f)
	if strconv.IntSize == 32 {
		want, wantFP = `offq-type-v2 codec=struct size=20 align=4 layout=`+
			`struct{X @0 float64:8;Y @8 float64:8;Tag "tag" @16 [4]uint8:1;}`, uint64(0x43b559d80a697b2f)
	}
	if got != want {
		t.Fatalf("describe:\n got %s\nwant %s", got, want)
	}
	if fp := TypeFingerprint("struct", reflect.TypeFor[fpPoint]()); fp != wantFP {
		t.Fatalf("fingerprint %#x changed: every deployed process would disagree", fp)
	}
}

func TestDescribeRecursiveType(t *testing.T) {
	got := describe("msgpack", reflect.TypeFor[fpNode]())
	want := `offq-type-v2 codec=msgpack size=48 align=8 layout=` +
		`struct{Val @0 int32:4;Next @8 *^2;Children @16 []^2;Meta @40 map[string:16]interface(interface {});}`
	if strconv.IntSize == 32 {
		want = `offq-type-v2 codec=msgpack size=24 align=4 layout=` +
			`struct{Val @0 int32:4;Next @4 *^2;Children @8 []^2;Meta @20 map[string:8]interface(interface {});}`
	}
	if got != want {
		t.Fatalf("describe:\n got %s\nwant %s", got, want)
	}
}

func TestFingerprintTellsTypesApart(t *testing.T) {
	type base struct {
		A int32
		B float32
	}
	type renamed struct {
		A int32
		C float32
	}
	type reordered struct {
		B float32
		A int32
	}
	type retyped struct {
		A int32
		B int32
	}
	type wider struct {
		A int64
		B float32
	}
	type tagged struct {
		A int32 `msgpack:"a"`
		B float32
	}
	fps := map[uint64]string{}
	for name, typ := range map[string]reflect.Type{
		"base":      reflect.TypeFor[base](),
		"renamed":   reflect.TypeFor[renamed](),
		"reordered": reflect.TypeFor[reordered](),
		"retyped":   reflect.TypeFor[retyped](),
		"wider":     reflect.TypeFor[wider](),
		"tagged":    reflect.TypeFor[tagged](),
		"[]byte":    bytesType,
		"string":    reflect.TypeFor[string](),
		"*base":     reflect.TypeFor[*base](),
		"[2]base":   reflect.TypeFor[[2]base](),
		"[3]base":   reflect.TypeFor[[3]base](),
	} {
		fp := TypeFingerprint("struct", typ)
		if other, ok := fps[fp]; ok {
			t.Errorf("%s and %s share fingerprint %#x", name, other, fp)
		}
		fps[fp] = name
		if fp == 0 {
			t.Errorf("%s: fingerprint 0", name)
		}
	}
	// Identity: the same type twice, and an unnamed type spelled twice.
	if TypeFingerprint("struct", reflect.TypeFor[base]()) != TypeFingerprint("struct", reflect.TypeFor[base]()) {
		t.Error("fingerprint not deterministic")
	}
	if TypeFingerprint("raw", reflect.TypeFor[struct{ A int }]()) != TypeFingerprint("raw", reflect.TypeFor[struct{ A int }]()) {
		t.Error("unnamed type: fingerprint not deterministic")
	}
	if TypeFingerprint("a", nil) == TypeFingerprint("b", nil) {
		t.Error("codec name not in the fingerprint")
	}
}
