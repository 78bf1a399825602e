package codec

// Codec turns values of type T into the bytes of a message and back. Package bus uses one
// for each typed publisher and subscription (bus.NewTypedPublisher, bus.Subscribe). A Codec is
// safe for concurrent use by multiple goroutines.
type Codec[T any] interface {
	// Name names the encoding, at most 16 bytes ("raw", "msgpack", "struct"). A topic records
	// it with the fingerprint; tools read it to know how to show a message.
	Name() string

	// Fingerprint identifies T under this codec (see TypeFingerprint). It returns an error
	// wrapping ErrUnsupportedType if the codec cannot carry T; bus calls it when a publisher
	// or subscription is created, so such a type is refused there.
	Fingerprint() (uint64, error)

	// SizeHint returns the number of bytes v encodes to, if the codec knows it without
	// encoding (Raw, Struct), or 0. A publisher loans that much first.
	SizeHint(v *T) int

	// Encode writes v at the start of dst and returns the number of bytes written. It returns
	// ErrShortBuffer if the encoding does not fit; dst's contents are then unspecified.
	Encode(dst []byte, v *T) (int, error)

	// Decode reads the value that src holds into v. src may be in shared memory that another
	// process wrote: Decode must neither trust it nor read outside it, and must not keep it
	// after returning unless the codec documents that v aliases it (Raw).
	Decode(src []byte, v *T) error
}

// InPlace is a Codec whose encoding of T is T's own memory (Struct): a publisher gets a *T in
// the message buffer to fill, and a subscriber reads the message through a *T over the buffer,
// without encoding or decoding anything.
type InPlace[T any] interface {
	Codec[T]

	// View returns the value that b holds, as a *T aliasing b. It fails if b is too short or
	// misaligned for T, or if the codec cannot carry T.
	View(b []byte) (*T, error)
}

// Raw is the identity codec for byte slices: the message is the bytes. Its Decode makes v
// alias src (no copy), so a decoded slice of a received message is valid only until the
// message is released. The zero value is ready to use.
type Raw struct{}

var _ Codec[[]byte] = Raw{}

// Name returns "raw".
func (Raw) Name() string { return "raw" }

// Fingerprint returns the fingerprint of []byte under "raw".
func (Raw) Fingerprint() (uint64, error) { return rawFingerprint, nil }

var rawFingerprint = TypeFingerprint("raw", bytesType)

// SizeHint returns len(*v).
func (Raw) SizeHint(v *[]byte) int { return len(*v) }

// Encode copies *v into dst.
func (Raw) Encode(dst []byte, v *[]byte) (int, error) {
	if len(*v) > len(dst) {
		return 0, ErrShortBuffer
	}
	copyChunked(dst, *v)
	return len(*v), nil
}

// Decode sets *v to src itself: no copy.
func (Raw) Decode(src []byte, v *[]byte) error {
	*v = src
	return nil
}

// copyChunked copies in 256 KiB pieces: Go's copy switches to non-temporal stores at 1 MiB,
// which makes one large copy about twice as slow and leaves the data out of the cache that
// the subscriber reads it from.
func copyChunked(dst, src []byte) {
	const chunk = 256 << 10
	for len(src) > chunk {
		copy(dst[:chunk], src[:chunk])
		dst, src = dst[chunk:], src[chunk:]
	}
	copy(dst, src)
}
