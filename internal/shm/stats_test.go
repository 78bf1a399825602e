package shm

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestStatsReadOnlyAndList(t *testing.T) {
	dir := t.TempDir()
	r, err := Create("s1", Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p, err := r.Attach("pub")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Detach()
	tp, err := p.LookupTopic("a.b", true, 0)
	if err != nil {
		t.Fatal(err)
	}
	tp.nextSeq(10)
	in, err := p.OpenInbox(InboxConfig{Capacity: 8, Pattern: "a.>"})
	if err != nil {
		t.Fatal(err)
	}
	defer in.close()
	b, _ := p.alloc(10)
	defer p.unloan(b.Handle())

	os.WriteFile(filepath.Join(dir, "not-a-region"), []byte("hello world"), 0o600)
	os.WriteFile(filepath.Join(dir, ".s1.init-0011"), nil, 0o600)
	names, err := List(dir)
	if err != nil || len(names) != 1 || names[0] != "s1" {
		t.Fatalf("List: %v %v", names, err)
	}

	ro, err := Open("s1", Options{Dir: dir, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := ro.Attach("x"); !errors.Is(err, ErrPermission) {
		t.Fatalf("Attach on a read-only region: %v", err)
	}
	s := ro.Stats()
	if len(s.Topics) != 1 || s.Topics[0].Name != "a.b" || s.Topics[0].Published != 1 || s.Topics[0].Bytes != 10 {
		t.Errorf("topics %+v", s.Topics)
	}
	if len(s.Inboxes) != 1 || s.Inboxes[0].Pattern != "a.>" || s.Inboxes[0].OwnerName != "pub" || s.Inboxes[0].Capacity != 8 {
		t.Errorf("inboxes %+v", s.Inboxes)
	}
	if len(s.Participants) != 1 || !s.Participants[0].Alive || s.Participants[0].Name != "pub" {
		t.Errorf("participants %+v", s.Participants)
	}
	if s.Pools[0].InUse != 1 || s.Pools[0].HighWater < 1 {
		t.Errorf("pool 0 %+v", s.Pools[0])
	}
}
