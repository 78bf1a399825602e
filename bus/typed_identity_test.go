package bus

import (
	"errors"
	"strings"
	"testing"

	"github.com/offq/offq/bus/internal/sametype/a"
	"github.com/offq/offq/bus/internal/sametype/b"
	"github.com/offq/offq/codec"
)

// Two byte-identical copies of a struct in different packages (as in two modules) are the
// same message: a publisher of one and a subscriber of the other share a topic, under the
// struct codec (same layout) and under msgpack (self-describing).
func TestTypeIdentityAcrossPackages(t *testing.T) {
	bs := openTest(t, t.TempDir())
	ctx := ctxT(t)

	ssub, err := NewTypedSubscription(bs, "id.struct", codec.NewStruct[b.Reading]())
	if err != nil {
		t.Fatal(err)
	}
	spub, err := NewTypedPublisher(bs, "id.struct", codec.NewStruct[a.Reading]())
	if err != nil {
		t.Fatalf("struct publisher of a copy of the subscriber's type: %v", err)
	}
	l, err := spub.Loan()
	if err != nil {
		t.Fatal(err)
	}
	l.Value().Seq, l.Value().Celsius = 7, 21.5
	if err := spub.Send(ctx, l); err != nil {
		t.Fatal(err)
	}
	sm, err := ssub.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := sm.View(); err != nil || r.Seq != 7 || r.Celsius != 21.5 {
		t.Fatalf("View: %+v, %v", r, err)
	}
	sm.Release()

	// msgpack, with the subscriber's copy and a map.
	msub, err := NewTypedSubscription(bs, "id.mp", codec.NewMsgpack[b.Event]())
	if err != nil {
		t.Fatal(err)
	}
	anysub, err := NewTypedSubscription(bs, "id.mp", codec.NewMsgpack[map[string]any]())
	if err != nil {
		t.Fatalf("msgpack subscriber of a map: %v", err)
	}
	mpub, err := NewTypedPublisher(bs, "id.mp", codec.NewMsgpack[a.Event]())
	if err != nil {
		t.Fatalf("msgpack publisher of a copy of the subscriber's type: %v", err)
	}
	if err := mpub.Publish(ctx, &a.Event{Sensor: "line1", Temp: 2.5, Tags: []string{"x"}}); err != nil {
		t.Fatal(err)
	}
	mm, err := msub.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ev b.Event
	if err := mm.Decode(&ev); err != nil || ev.Sensor != "line1" || ev.Temp != 2.5 || len(ev.Tags) != 1 {
		t.Fatalf("Decode: %+v, %v", ev, err)
	}
	mm.Release()
	am, err := anysub.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := am.Decode(&m); err != nil || m["sensor"] != "line1" {
		t.Fatalf("Decode into a map: %v, %v", m, err)
	}
	am.Release()

	// Another layout is still another type, and the error names the caller's type.
	type other struct {
		Seq     uint64
		Celsius float32
	}
	_, err = NewTypedPublisher(bs, "id.struct", codec.NewStruct[other]())
	if !errors.Is(err, ErrTypeMismatch) || !strings.Contains(err.Error(), "bus.other") || !strings.Contains(err.Error(), `codec "struct"`) {
		t.Fatalf("publisher of another layout: %v", err)
	}
	// A strict msgpack codec records its layout: only the same layout shares the topic.
	if _, err := NewTypedPublisher(bs, "id.strict", codec.NewMsgpack[a.Event](codec.StrictType())); err != nil {
		t.Fatal(err)
	}
	if _, err := NewTypedSubscription(bs, "id.strict", codec.NewMsgpack[b.Event](codec.StrictType())); err != nil {
		t.Fatalf("strict msgpack, same layout: %v", err)
	}
	if _, err := NewTypedSubscription(bs, "id.strict", codec.NewMsgpack[map[string]any]()); !errors.Is(err, ErrTypeMismatch) || !strings.Contains(err.Error(), "StrictType") {
		t.Fatalf("msgpack subscriber on a strict topic: %v", err)
	}
}
