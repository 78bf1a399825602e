// Package codec turns Go values into the bytes of offq messages and back, for the typed
// publishers and subscriptions of package bus (bus.NewTypedPublisher, bus.Subscribe). It depends
// on transport and on nothing above it, and it is the only package of offq that imports
// MessagePack.
//
// # Codecs
//
// A Codec[T] names its encoding, fingerprints T, encodes a *T into a buffer and decodes one
// back. Three are provided:
//
//   - Raw: []byte in and out, untouched. Decode makes the slice alias the message.
//   - Msgpack: any type github.com/vmihailenco/msgpack/v5 carries. Encode writes directly
//     into the buffer it is given (for a publisher, the loaned buffer in shared memory) and
//     reports ErrShortBuffer when the encoding does not fit, so that the publisher can loan
//     the next size class and encode again. Decode reads the message in place after checking
//     its structure.
//   - Struct: pointer-free fixed-size types, carried as their own memory. It is an InPlace
//     codec: a publisher fills a *T that lives in the message buffer, and a subscriber reads
//     it through a *T over the buffer (View). Nothing is encoded at all.
//
// # Type identity
//
// TypeFingerprint hashes a codec's name and a type's size, alignment and layout (field
// names, msgpack tags, offsets, kinds and sizes, recursively), not its name or package path:
// a byte-identical copy of a struct in another module is the same message. Struct
// fingerprints T's layout; Msgpack, whose messages describe themselves, has one fingerprint
// for every T, unless made with StrictType. bus records the fingerprint and the codec's name
// on a topic in shared memory when a typed publisher or subscriber first uses it, and refuses
// one of another layout or codec with bus.ErrTypeMismatch, in every process. Tools read the codec's name to know how to show a
// message: `offq sub --json` prints msgpack messages as JSON with MsgpackToJSON, without the
// Go type.
//
// # Untrusted bytes
//
// A message may have been written by a faulty or hostile process. Struct.View checks the
// message's length and alignment. Msgpack.Decode first walks the message without
// allocating, checking every length against the bytes that remain and nesting against
// MaxDepth, so the decoder behind it can neither read outside the message nor recurse without
// bound, and allocates at most one slice element or map entry per byte of the message;
// MsgpackToJSON uses the same walk. Errors from malformed messages wrap ErrMalformed.
//
// # Allocations
//
// Raw and Struct allocate nothing. Msgpack encoding writes no intermediate buffer and, for
// numbers, strings, byte slices and structs of them, allocates nothing; the msgpack library
// allocates for some kinds (maps, []string, time.Time, byte arrays). Decoding allocates what
// the decoded value owns (each string, slice and map). docs/codec.md has the figures.
//
// # Concurrency
//
// Raw, *Msgpack and *Struct are safe for concurrent use by multiple goroutines; Msgpack
// pools its encoders and decoders.
package codec
