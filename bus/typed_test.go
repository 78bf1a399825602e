package bus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/offq/offq/codec"
	"github.com/offq/offq/internal/shm"
)

// reading is pointer-free: the Struct codec carries it in place.
type reading struct {
	Seq    uint64
	Sensor [16]byte
	Values [8]float64
	Flags  uint32
	Ok     bool
}

func makeReading(seq uint64) reading {
	r := reading{Seq: seq, Flags: uint32(seq * 7), Ok: seq%2 == 0}
	copy(r.Sensor[:], fmt.Sprintf("sensor-%d", seq%10))
	for i := range r.Values {
		r.Values[i] = float64(seq) + float64(i)/8
	}
	return r
}

func (r *reading) check(seq uint64) error {
	if want := makeReading(seq); *r != want {
		return fmt.Errorf("reading %d: got %+v, want %+v", seq, *r, want)
	}
	return nil
}

// otherReading is another pointer-free type, for mismatches.
type otherReading struct {
	Seq   uint64
	Value float32
}

// badReading holds a slice deep inside: the Struct codec refuses it.
type badReading struct {
	Seq   uint64
	Inner struct {
		Count int32
		Tags  []string
	}
}

// event is a msgpack message of varying size.
type event struct {
	Seq   uint64           `msgpack:"seq"`
	Name  string           `msgpack:"name"`
	Tags  []string         `msgpack:"tags"`
	Attrs map[string]int64 `msgpack:"attrs"`
	Blob  []byte           `msgpack:"blob"`
	At    time.Time        `msgpack:"at"`
}

// makeEvent's encoding takes from about 60 bytes to about 70 KiB: every size class of the
// default configuration.
func makeEvent(seq uint64) event {
	e := event{
		Seq:   seq,
		Name:  fmt.Sprintf("event-%d", seq),
		Attrs: map[string]int64{"seq": int64(seq)},
		At:    time.Unix(1700000000+int64(seq), int64(seq)),
	}
	for i := range seq % 4 {
		e.Tags = append(e.Tags, fmt.Sprintf("t%d", i))
		e.Attrs[fmt.Sprintf("k%d", i)] = -int64(i)
	}
	n := int(seq*37) % 3000
	if seq%50 == 0 {
		n = 70000
	}
	e.Blob = make([]byte, n)
	for i := range e.Blob {
		e.Blob[i] = byte(seq) ^ byte(i)
	}
	return e
}

func (e *event) check(seq uint64) error {
	w := makeEvent(seq)
	if e.Seq != w.Seq || e.Name != w.Name || !slices.Equal(e.Tags, w.Tags) || !maps.Equal(e.Attrs, w.Attrs) ||
		!bytes.Equal(e.Blob, w.Blob) || !e.At.Equal(w.At) {
		return fmt.Errorf("event %d: got seq %d name %q tags %v attrs %v blob %d bytes at %v", seq, e.Seq, e.Name, e.Tags, e.Attrs, len(e.Blob), e.At)
	}
	return nil
}

func TestTypedStructInPlace(t *testing.T) {
	b := openTest(t, t.TempDir())
	ctx := ctxT(t)
	c := codec.NewStruct[reading]()
	sub, err := NewTypedSubscription(b, "plant.*", c, WithOverflow(Block))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := NewTypedPublisher(b, "plant.temp", c)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 100; seq++ {
		if seq%2 == 0 {
			r := makeReading(seq)
			if err := pub.Publish(ctx, &r); err != nil {
				t.Fatal(err)
			}
			continue
		}
		l, err := pub.Loan()
		if err != nil {
			t.Fatal(err)
		}
		if *l.Value() != (reading{}) {
			t.Fatalf("loaned value not zeroed: %+v", *l.Value())
		}
		*l.Value() = makeReading(seq)
		if err := pub.Send(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	for seq := uint64(1); seq <= 100; seq++ {
		m, err := sub.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		v, err := m.View()
		if err != nil {
			t.Fatal(err)
		}
		if err := v.check(seq); err != nil {
			t.Fatal(err)
		}
		if reflect.ValueOf(v).Pointer() != reflect.ValueOf(&m.Data()[0]).Pointer() {
			t.Fatal("View is not the message's bytes")
		}
		var copied reading
		if err := m.Decode(&copied); err != nil || copied != *v {
			t.Fatalf("Decode: %+v, %v", copied, err)
		}
		if len(m.Data()) != int(reflect.TypeFor[reading]().Size()) {
			t.Fatalf("message of %d bytes, want %d", len(m.Data()), reflect.TypeFor[reading]().Size())
		}
		m.Release()
		if _, err := m.View(); err != nil {
			t.Fatal(err) // the Message value still names the buffer; using it is the caller's bug
		}
	}
	var zero TypedMessage[reading]
	if _, err := zero.View(); !errors.Is(err, ErrReleased) {
		t.Fatalf("View of the zero message: %v", err)
	}
	if n := inUse(b); n != 0 {
		t.Fatalf("%d buffers in use", n)
	}
}

func TestTypedMsgpackRoundTripAndRegrowth(t *testing.T) {
	b := openTest(t, t.TempDir())
	ctx := ctxT(t)
	c := codec.NewMsgpack[event]()
	sub, err := NewTypedSubscription(b, "ev", c, WithOverflow(Block), WithQueueDepth(2))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := NewTypedPublisher(b, "ev", c)
	if err != nil {
		t.Fatal(err)
	}
	classes := map[int]int{}
	prev := 1
	for _, seq := range []uint64{1, 7, 50, 3, 100, 2, 60, 4, 5} {
		e := makeEvent(seq)
		if err := pub.Publish(ctx, &e); err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
		m, err := sub.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got event
		if err := m.Decode(&got); err != nil {
			t.Fatal(err)
		}
		if err := got.check(seq); err != nil {
			t.Fatal(err)
		}
		// The publisher loans as much as its previous message took (1 byte at first) and, if
		// that class is too small, encodes again in the next one, until it fits.
		enc := make([]byte, 1<<20)
		n, err := c.Encode(enc, &e)
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Data()) != n { // same length; map order varies
			t.Fatalf("seq %d: %d bytes sent, the encoding is %d", seq, len(m.Data()), n)
		}
		classOf := func(n int) int {
			for _, cl := range b.r.Config().Classes {
				if int(cl.Size) >= n {
					return int(cl.Size)
				}
			}
			return -1
		}
		want := classOf(prev)
		if n > want {
			want = classOf(n)
		}
		if m.h.Cap() != want {
			t.Fatalf("seq %d: %d-byte encoding after a %d-byte one in a %d-byte buffer, want %d", seq, n, prev, m.h.Cap(), want)
		}
		prev = n
		classes[m.h.Cap()]++
		m.Release()
	}
	if len(classes) < 3 {
		t.Fatalf("messages used classes %v, want at least 3", classes)
	}
	// Decode resets v: a previous message's map keys do not survive.
	e3, e1 := makeEvent(3), makeEvent(1)
	pub.Publish(ctx, &e3)
	pub.Publish(ctx, &e1)
	var got event
	for _, seq := range []uint64{3, 1} {
		m, err := sub.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Decode(&got); err != nil {
			t.Fatal(err)
		}
		m.Release()
		if err := got.check(seq); err != nil {
			t.Fatal(err)
		}
	}
	if n := inUse(b); n != 0 {
		t.Fatalf("%d buffers in use", n)
	}
}

func TestTypedMsgpackTooLarge(t *testing.T) {
	cfg := shm.DefaultConfig()
	cfg.Classes = []shm.Class{{Size: 256, Count: 8}, {Size: 4 << 10, Count: 8}}
	b := openTest(t, t.TempDir(), WithConfig(cfg))
	ctx := ctxT(t)
	pub, err := NewTypedPublisher(b, "big", codec.NewMsgpack[event]())
	if err != nil {
		t.Fatal(err)
	}
	e := makeEvent(50) // 70 KiB
	err = pub.Publish(ctx, &e)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "4KiB") || !strings.Contains(err.Error(), "msgpack") {
		t.Fatalf("Publish of 70 KiB with a 4 KiB largest class: %v", err)
	}
	t.Log(err)
	if n := inUse(b); n != 0 {
		t.Fatalf("%d buffers in use after a failed publish", n)
	}
	// The publisher still works, and goes back to small buffers.
	e = makeEvent(1)
	if err := pub.Publish(ctx, &e); err != nil {
		t.Fatal(err)
	}
	// Raw: the size is known up front.
	raw, err := NewTypedPublisher(b, "big.raw", codec.Raw{})
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 5000)
	if err := raw.Publish(ctx, &data); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Raw Publish of 5000 bytes: %v", err)
	}
	// Struct: refused at creation.
	type huge struct{ B [8 << 10]byte }
	if _, err := NewTypedPublisher(b, "big.struct", codec.NewStruct[huge]()); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "4KiB") {
		t.Fatalf("NewPublisher of an 8 KiB struct: %v", err)
	}
}

func TestTypedRaw(t *testing.T) {
	b := openTest(t, t.TempDir())
	ctx := ctxT(t)
	sub, err := NewTypedSubscription(b, "raw", codec.Raw{})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := NewTypedPublisher(b, "raw", codec.Raw{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 1, 300, 70000} {
		data := make([]byte, n)
		fillBytes(data, n)
		if err := pub.Publish(ctx, &data); err != nil {
			t.Fatal(err)
		}
		m, err := sub.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got []byte
		if err := m.Decode(&got); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: got %d bytes, %v", n, len(got), err)
		}
		if n > 0 && &got[0] != &m.Data()[0] {
			t.Fatal("Raw Decode copied")
		}
		m.Release()
	}
	if _, err := pub.Loan(); err == nil {
		t.Fatal("Loan with Raw succeeded")
	}
}

func fillBytes(b []byte, seed int) {
	for i := range b {
		b[i] = byte(i*31 + seed)
	}
}

func TestTypedMismatchInProcess(t *testing.T) {
	b := openTest(t, t.TempDir())
	ctx := ctxT(t)
	if _, err := NewTypedPublisher(b, "mm.a", codec.NewStruct[reading]()); err != nil {
		t.Fatal(err)
	}
	// Another codec, another type, another type under the same codec: all refused.
	for name, f := range map[string]func() error{
		"msgpack publisher": func() error { _, err := NewTypedPublisher(b, "mm.a", codec.NewMsgpack[reading]()); return err },
		"other publisher":   func() error { _, err := NewTypedPublisher(b, "mm.a", codec.NewStruct[otherReading]()); return err },
		"raw publisher":     func() error { _, err := NewTypedPublisher(b, "mm.a", codec.Raw{}); return err },
		"other subscriber":  func() error { _, err := NewTypedSubscription(b, "mm.a", codec.NewStruct[otherReading]()); return err },
		"wildcard":          func() error { _, err := NewTypedSubscription(b, "mm.*", codec.NewMsgpack[event]()); return err },
	} {
		err := f()
		if !errors.Is(err, ErrTypeMismatch) {
			t.Errorf("%s: %v, want ErrTypeMismatch", name, err)
		} else if !strings.Contains(err.Error(), `"struct"`) {
			t.Errorf("%s: %v does not name the recorded codec", name, err)
		}
	}
	// The same type is welcome, and an untyped publisher is not checked.
	if _, err := NewTypedPublisher(b, "mm.a", codec.NewStruct[reading]()); err != nil {
		t.Fatal(err)
	}
	if _, err := NewTypedSubscription(b, "mm.a", codec.NewStruct[reading]()); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publisher("mm.a"); err != nil {
		t.Fatal(err)
	}
	if fp, name := b.topics["mm.a"].Fingerprint(); name != "struct" || fp == 0 {
		t.Fatalf("topic records %q %#x", name, fp)
	}

	// A wildcard subscription meets a topic of another type at its first message: that
	// message is an ErrTypeMismatch, and the subscription goes on.
	sub, err := NewTypedSubscription(b, "mw.*", codec.NewStruct[reading](), WithOverflow(Block))
	if err != nil {
		t.Fatal(err)
	}
	good, _ := NewTypedPublisher(b, "mw.good", codec.NewStruct[reading]())
	bad, err := NewTypedPublisher(b, "mw.bad", codec.NewStruct[otherReading]())
	if err != nil {
		t.Fatal(err)
	}
	o := otherReading{Seq: 1}
	r1, r2 := makeReading(1), makeReading(2)
	good.Publish(ctx, &r1)
	bad.Publish(ctx, &o)
	good.Publish(ctx, &r2)
	var got []uint64
	var mismatches int
	for m, err := range sub.Messages(ctx) {
		if errors.Is(err, ErrTypeMismatch) {
			mismatches++
			if !strings.Contains(err.Error(), "mw.bad") {
				t.Errorf("mismatch error does not name the topic: %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		v, err := m.View()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, v.Seq)
		if len(got) == 2 {
			break
		}
	}
	if mismatches != 1 || !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("got %v and %d mismatches, want [1 2] and 1", got, mismatches)
	}
	if n := inUse(b); n != 0 {
		t.Fatalf("%d buffers in use", n)
	}
}

func TestTypedStructRefusesPointers(t *testing.T) {
	b := openTest(t, t.TempDir())
	_, errPub := NewTypedPublisher(b, "bad", codec.NewStruct[badReading]())
	_, errSub := NewTypedSubscription(b, "bad", codec.NewStruct[badReading]())
	for _, err := range []error{errPub, errSub} {
		var te *codec.TypeError
		if !errors.As(err, &te) || !errors.Is(err, codec.ErrUnsupportedType) {
			t.Fatalf("%v, want a *codec.TypeError", err)
		}
		if te.Path != "bus.badReading.Inner.Tags" || !strings.Contains(err.Error(), "bus.badReading.Inner.Tags: []string") {
			t.Fatalf("%v: path %q", err, te.Path)
		}
	}
	// Refused before anything was recorded: the topic is free for a good type.
	if _, err := NewTypedPublisher(b, "bad", codec.NewStruct[reading]()); err != nil {
		t.Fatal(err)
	}
	if _, err := NewTypedPublisher[reading](b, "nil", nil); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("nil codec: %v", err)
	}
}

// The typed Raw and Struct paths allocate nothing: publish, receive, view or decode, release.
func TestTypedZeroAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	b := openTest(t, t.TempDir())
	ctx := context.Background()
	sc := codec.NewStruct[reading]()
	ssub, _ := NewTypedSubscription(b, "za.s", sc)
	spub, _ := NewTypedPublisher(b, "za.s", sc)
	rsub, _ := NewTypedSubscription(b, "za.r", codec.Raw{})
	rpub, _ := NewTypedPublisher(b, "za.r", codec.Raw{})
	payload := make([]byte, 100)
	// Publish and Decode take a *T that escapes (the codec is an interface): the values live
	// outside the measured functions, as a program's long-lived message variables do.
	var r reading
	var got reading
	var gotBytes []byte
	cases := map[string]func(){
		"Struct Loan+Send+Receive+View+Release": func() {
			l, err := spub.Loan()
			if err != nil {
				panic(err)
			}
			l.Value().Seq = 1
			if err := spub.Send(ctx, l); err != nil {
				panic(err)
			}
			m, err := ssub.Receive(ctx)
			if err != nil {
				panic(err)
			}
			if v, err := m.View(); err != nil || v.Seq != 1 {
				panic(err)
			}
			m.Release()
		},
		"Struct Publish+Receive+Decode+Release": func() {
			r = reading{Seq: 2}
			if err := spub.Publish(ctx, &r); err != nil {
				panic(err)
			}
			m, err := ssub.Receive(ctx)
			if err != nil {
				panic(err)
			}
			if err := m.Decode(&got); err != nil || got.Seq != 2 {
				panic(err)
			}
			m.Release()
		},
		"Raw Publish+Receive+Decode+Release": func() {
			if err := rpub.Publish(ctx, &payload); err != nil {
				panic(err)
			}
			m, err := rsub.Receive(ctx)
			if err != nil {
				panic(err)
			}
			if err := m.Decode(&gotBytes); err != nil || len(gotBytes) != 100 {
				panic(err)
			}
			m.Release()
		},
	}
	for name, f := range cases {
		f() // warm up
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s: %v allocations per run, want 0", name, n)
		}
	}
}

// TestTypedMsgpackAllocs measures what the msgpack path allocates (docs/codec.md quotes it)
// and holds the part that is the codec's own: encoding a flat struct allocates nothing.
func TestTypedMsgpackAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	b := openTest(t, t.TempDir())
	ctx := context.Background()
	type flat struct {
		Seq   uint64
		Temp  float64
		Name  string
		Ok    bool
		Count int32
	}
	c := codec.NewMsgpack[flat]()
	sub, _ := NewTypedSubscription(b, "ma", c)
	pub, _ := NewTypedPublisher(b, "ma", c)
	v := flat{Seq: 1, Temp: 21.5, Name: "line1", Ok: true}
	publish := func() {
		if err := pub.Publish(ctx, &v); err != nil {
			panic(err)
		}
		m, err := sub.Receive(ctx)
		if err != nil {
			panic(err)
		}
		m.Release()
	}
	publish()
	if n := testing.AllocsPerRun(1000, publish); n != 0 {
		t.Errorf("msgpack Publish of a flat struct: %v allocations per run, want 0", n)
	}
	pub.Publish(ctx, &v)
	m, _ := sub.Receive(ctx)
	defer m.Release()
	var got flat
	decodeFlat := func() {
		if err := m.Decode(&got); err != nil {
			panic(err)
		}
	}
	decodeFlat()
	t.Logf("msgpack Decode of a flat struct with one string: %v allocations", testing.AllocsPerRun(1000, decodeFlat))
	e := makeEvent(5)
	pub2, _ := NewTypedPublisher(b, "mb", codec.NewMsgpack[event]())
	sub2, _ := NewTypedSubscription(b, "mb", codec.NewMsgpack[event]())
	pub2.Publish(ctx, &e)
	m2, _ := sub2.Receive(ctx)
	defer m2.Release()
	var ev event
	t.Logf("msgpack Publish of an event (string, 1 tag, 2-key map, 185-byte blob, time): %v allocations",
		testing.AllocsPerRun(100, func() {
			pub2.Publish(ctx, &e)
			m, _ := sub2.Receive(ctx)
			m.Release()
		}))
	t.Logf("msgpack Decode of that event: %v allocations", testing.AllocsPerRun(100, func() { m2.Decode(&ev) }))
}

// TestTypeMismatchNamesRecordedType: the topic records the Go type's name with its codec and
// fingerprint, and a mismatch error names it (the region used to record only the fingerprint).
func TestTypeMismatchNamesRecordedType(t *testing.T) {
	b := openTest(t, t.TempDir())
	type other struct{ A, B uint32 }
	p, err := NewTypedPublisher(b, "types.rec", codec.NewStruct[reading]())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if got := p.p.TypeName(); got != "bus.reading" {
		t.Fatalf("recorded type name %q, want bus.reading", got)
	}
	_, err = NewTypedPublisher(b, "types.rec", codec.NewStruct[other]())
	if !errors.Is(err, ErrTypeMismatch) || !strings.Contains(err.Error(), "type bus.reading,") || !strings.Contains(err.Error(), "type bus.other,") {
		t.Fatalf("publisher of another type: %v, want ErrTypeMismatch naming bus.reading and bus.other", err)
	}
	_, err = NewTypedSubscription(b, "types.rec", codec.NewStruct[other]())
	if !errors.Is(err, ErrTypeMismatch) || !strings.Contains(err.Error(), "type bus.reading,") {
		t.Fatalf("subscription of another type: %v, want ErrTypeMismatch naming bus.reading", err)
	}
	pp, err := b.Publisher("types.rec")
	if err != nil {
		t.Fatal(err)
	}
	defer pp.Close()
	if err := pp.ClaimCodec("struct", 12345678, "x.Y"); !errors.Is(err, ErrTypeMismatch) || !strings.Contains(err.Error(), "type bus.reading,") || !strings.Contains(err.Error(), "type x.Y,") {
		t.Fatalf("ClaimCodec of another type: %v, want ErrTypeMismatch naming bus.reading and x.Y", err)
	}
}
