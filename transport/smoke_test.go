package transport

import (
	"context"
	"testing"
)

func TestSmoke(t *testing.T) {
	dir := t.TempDir()
	r, err := Create("smoke", Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := Open("smoke", Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	p, err := r.Attach("a")
	if err != nil {
		t.Fatal(err)
	}
	q, err := r2.Attach("b")
	if err != nil {
		t.Fatal(err)
	}
	in, err := q.OpenInbox(InboxConfig{Capacity: 4})
	if err != nil {
		t.Fatal(err)
	}
	out, err := r.Inbox(in.ID())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		b, err := p.Alloc(100)
		if err != nil {
			t.Fatal(err)
		}
		copy(b.Bytes(), "hello")
		b.SetMeta(Meta{Len: 5, Seq: uint64(i)})
		if err := r.AddRefs(b.Handle(), 1); err != nil {
			t.Fatal(err)
		}
		if err := out.Push(context.Background(), b.Handle()); err != nil {
			t.Fatal(err)
		}
		if err := p.Unloan(b.Handle()); err != nil {
			t.Fatal(err)
		}
	}
	st := r.InboxStats()
	t.Logf("%+v", st)
	var seqs []uint64
	for {
		h, ok, err := in.TryPop()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		b, err := r2.Buffer(h)
		if err != nil {
			t.Fatal(err)
		}
		if string(b.Data()) != "hello" {
			t.Fatalf("data %q", b.Data())
		}
		seqs = append(seqs, b.Meta().Seq)
		if err := r2.Release(h); err != nil {
			t.Fatal(err)
		}
	}
	t.Log(seqs, r.PoolStats()[0], r.CountAllocated())
	if len(seqs) != 4 || seqs[0] != 6 {
		t.Fatal(seqs)
	}
	if n := r.CountAllocated()[0]; n != 0 {
		t.Fatal(n)
	}
	in.Close()
	p.Detach()
	q.Detach()
	r.Close()
	r2.Close()
}
