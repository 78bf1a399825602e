package codec

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMsgpackToJSON(t *testing.T) {
	type reading struct {
		Sensor string            `msgpack:"sensor"`
		Temp   float64           `msgpack:"temp"`
		Tags   []string          `msgpack:"tags"`
		Raw    []byte            `msgpack:"raw"`
		Count  int64             `msgpack:"count"`
		Big    uint64            `msgpack:"big"`
		Small  float32           `msgpack:"small"`
		Meta   map[string]any    `msgpack:"meta"`
		ByID   map[int]bool      `msgpack:"by_id"`
		At     time.Time         `msgpack:"at"`
		Nil    *int              `msgpack:"nil"`
		Names  map[string]string `msgpack:"names"`
	}
	v := reading{
		Sensor: "line1/\"temp\"\n", Temp: -21.5, Tags: []string{"a", "ü"}, Raw: []byte{0, 1, 255},
		Count: -1 << 40, Big: math.MaxUint64, Small: 0.1,
		Meta: map[string]any{"nested": []any{1, "x", map[string]any{"deep": true}}},
		ByID: map[int]bool{7: true}, At: time.Date(2024, 1, 2, 3, 4, 5, 600, time.UTC),
	}
	want := `{"sensor":"line1/\"temp\"\n","temp":-21.5,"tags":["a","ü"],"raw":"AAH/","count":-1099511627776,
		"big":18446744073709551615,"small":0.1,"meta":{"nested":[1,"x",{"deep":true}]},"by_id":{"7":true},
		"at":"2024-01-02T03:04:05.0000006Z","nil":null,"names":null}`
	var out bytes.Buffer
	if err := MsgpackToJSON(&out, mustMarshal(t, v)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"big":18446744073709551615`) || !strings.Contains(out.String(), `"small":0.1,`) {
		t.Errorf("numbers not exact: %s", out.String())
	}
	var got, exp any
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out.String())
	}
	if err := json.Unmarshal([]byte(want), &exp); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, exp) {
		t.Fatalf("got  %s\nwant %s", out.String(), want)
	}
}

func TestMsgpackToJSONScalarsAndOddities(t *testing.T) {
	for _, c := range []struct {
		in   []byte
		want string
	}{
		{[]byte{0xc0}, `null`},
		{[]byte{0xc3}, `true`},
		{[]byte{0x7f}, `127`},
		{[]byte{0xe0}, `-32`},
		{[]byte{0xd0, 0x80}, `-128`},
		{[]byte{0xd1, 0xff, 0xfe}, `-2`},
		{[]byte{0xcd, 0xff, 0xfe}, `65534`},
		{[]byte{0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 1}, `"NaN"`},
		{[]byte{0xcb, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0}, `"+Inf"`},
		{[]byte{0xca, 0xff, 0x80, 0, 0}, `"-Inf"`},
		{[]byte{0xa3, 'a', 0xff, 0x01}, `"a\ufffd\u0001"`},         // bad UTF-8, control byte
		{[]byte{0x81, 0x92, 1, 2, 0xc2}, `{"[1,2]":false}`},        // a key that is not a string
		{[]byte{0x81, 0xc0, 0x01}, `{"null":1}`},                   // a nil key
		{[]byte{0xd4, 0x05, 0xab}, `{"ext":5,"data":"qw=="}`},      // unknown extension
		{[]byte{0xd6, 0xff, 0, 0, 0, 1}, `"1970-01-01T00:00:01Z"`}, // timestamp 32
		{[]byte{0xc7, 12, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0}, `{"ext":-1,"data":"/////wAAAAAAAAAA"}`}, // bad nanoseconds
		{[]byte{0x90}, `[]`},
		{[]byte{0x80}, `{}`},
		{[]byte{0xc4, 0}, `""`},
	} {
		var out bytes.Buffer
		if err := MsgpackToJSON(&out, c.in); err != nil {
			t.Errorf("% x: %v", c.in, err)
			continue
		}
		if out.String() != c.want {
			t.Errorf("% x: got %s, want %s", c.in, out.String(), c.want)
		}
		if !json.Valid(out.Bytes()) {
			t.Errorf("% x: %s is not valid JSON", c.in, out.String())
		}
	}
}

func TestMsgpackToJSONMalformedWritesNothing(t *testing.T) {
	for _, in := range [][]byte{nil, {0x92, 1}, {0xc1}, {0x01, 0x02}, append(bytes.Repeat([]byte{0x91}, MaxDepth+1), 0)} {
		var out bytes.Buffer
		if err := MsgpackToJSON(&out, in); !errors.Is(err, ErrMalformed) || out.Len() != 0 {
			t.Errorf("% .8x: %v, wrote %q", in, err, out.String())
		}
	}
	ok := append(bytes.Repeat([]byte{0x91}, MaxDepth), 0)
	var out bytes.Buffer
	if err := MsgpackToJSON(&out, ok); err != nil {
		t.Errorf("%d levels: %v", MaxDepth, err)
	}
}
