package codec

import (
	"bytes"
	"errors"
	"testing"
)

func TestRaw(t *testing.T) {
	var c Raw
	if c.Name() != "raw" {
		t.Fatal(c.Name())
	}
	fp, err := c.Fingerprint()
	if err != nil || fp != TypeFingerprint("raw", bytesType) {
		t.Fatalf("Fingerprint: %#x, %v", fp, err)
	}
	for _, n := range []int{0, 1, 255, 300 << 10} { // the last one is copied in pieces
		src := make([]byte, n)
		for i := range src {
			src[i] = byte(i * 7)
		}
		if c.SizeHint(&src) != n {
			t.Fatalf("SizeHint %d", c.SizeHint(&src))
		}
		dst := make([]byte, n+10)
		m, err := c.Encode(dst, &src)
		if err != nil || m != n || !bytes.Equal(dst[:n], src) {
			t.Fatalf("Encode %d bytes: %d, %v", n, m, err)
		}
		if n > 0 {
			if _, err := c.Encode(dst[:n-1], &src); err != ErrShortBuffer {
				t.Fatalf("Encode into %d bytes: %v, want ErrShortBuffer", n-1, err)
			}
		}
		var got []byte
		if err := c.Decode(dst[:m], &got); err != nil || !bytes.Equal(got, src) {
			t.Fatal("Decode", err)
		}
		if n > 0 && &got[0] != &dst[0] {
			t.Fatal("Raw.Decode copied")
		}
	}
}

func TestTypeErrorUnwraps(t *testing.T) {
	_, err := NewStruct[struct{ S string }]().Fingerprint()
	var te *TypeError
	if !errors.As(err, &te) || !errors.Is(err, ErrUnsupportedType) || te.Codec != "struct" {
		t.Fatalf("%v", err)
	}
}
