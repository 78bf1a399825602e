package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/internal/statview"
	"github.com/offq/offq/transport"
)

// statBusFixture opens bus name in dir, owned by a participant called "tester", and leaves it
// in a known state until the test ends:
//
//	topic a.b: 6 messages of 10 bytes published
//	inbox 0, a.>, depth 4, drop oldest: 6 delivered, 2 evicted, 2 received, 2 queued
//	pool 256B x 8: the 2 queued buffers in use
func statBusFixture(t *testing.T, dir, name string) *bus.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg := transport.Config{
		Classes: []transport.Class{{Size: 256, Count: 8}},
		Inboxes: 4, InboxCapacity: 8, Topics: 4, Participants: 4, Held: 8,
	}
	b, err := bus.Open(name, bus.WithDir(dir), bus.WithConfig(cfg), bus.WithName("tester"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	s, err := b.Subscribe("a.>", bus.WithQueueDepth(4))
	if err != nil {
		t.Fatal(err)
	}
	p, err := b.Publisher("a.b")
	if err != nil {
		t.Fatal(err)
	}
	for range 6 {
		if err := p.Publish(ctx, make([]byte, 10)); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		m, err := s.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m.Release()
	}
	return b
}

func TestStatJSON(t *testing.T) {
	dir := t.TempDir()
	statBusFixture(t, dir, "one")
	code, out, stderr := runOffq(t, context.Background(), "stat", "--dir", dir, "--json")
	if code != exitOK {
		t.Fatalf("status %d: %s", code, stderr)
	}
	var rep statview.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(rep.Buses) != 1 {
		t.Fatalf("%d buses: %s", len(rep.Buses), out)
	}
	b := rep.Buses[0]
	if b.Name != "one" || len(b.Participants) != 1 || !b.Participants[0].Alive || b.Participants[0].Name != "tester" {
		t.Errorf("bus: %+v", b)
	}
	if len(b.Topics) != 1 || b.Topics[0] != (statview.Topic{Name: "a.b", Published: 6, Bytes: 60, Publishers: 1, Subscribers: 1}) {
		t.Errorf("topics: %+v", b.Topics)
	}
	wantIn := statview.Inbox{Inbox: 0, Subscriber: "tester", Pattern: "a.>", Overflow: "drop-oldest", Depth: 2, Capacity: 4,
		Delivered: 6, Received: 2, Dropped: statview.Drops{Oldest: 2}}
	if len(b.Inboxes) != 1 || b.Inboxes[0] != wantIn {
		t.Errorf("inboxes: %+v, want %+v", b.Inboxes, wantIn)
	}
	if len(b.Pools) != 1 || b.Pools[0].Size != 256 || b.Pools[0].Buffers != 8 || b.Pools[0].InUse != 2 || b.Pools[0].AllocFailures != 0 {
		t.Errorf("pools: %+v", b.Pools)
	}
	for _, key := range []string{`"in_use"`, `"delivered"`, `"oldest"`, `"size_bytes"`} {
		if !strings.Contains(out, key) {
			t.Errorf("JSON lacks %s", key)
		}
	}
}

func TestStatTable(t *testing.T) {
	dir := t.TempDir()
	statBusFixture(t, dir, "one")
	statBusFixture(t, dir, "two")
	code, out, stderr := runOffq(t, context.Background(), "stat", "--dir", dir, "--bus", "two")
	if code != exitOK {
		t.Fatalf("status %d: %s", code, stderr)
	}
	for _, want := range []string{
		"bus two ", "participants 1 alive, 0 dead", "tester[",
		"TOPIC  PUBLISHED  BYTES  PUBS  SUBSCRIBERS  HISTORY  TYPE",
		"a.b    6          60 B   1     1            0        -",
		"INBOX  SUBSCRIBER  PATTERN  OVERFLOW     DEPTH  CAPACITY  DELIVERED  RECEIVED  DROPPED  OLDEST  NEWEST  TIMEOUT  CORRUPT",
		"0      tester      a.>      drop-oldest  2      4         6          2         2        2       0       0        0",
		"POOL  SIZE  BUFFERS  IN USE  LOW WATER  ALLOC FAILURES",
		"0     256B  8        2",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	if strings.Contains(out, "bus one") {
		t.Errorf("--bus two shows bus one:\n%s", out)
	}
	code, out, _ = runOffq(t, context.Background(), "stat", "--dir", dir)
	if code != exitOK || !strings.Contains(out, "bus one ") || !strings.Contains(out, "bus two ") {
		t.Errorf("every bus: status %d\n%s", code, out)
	}
}

func TestStatErrors(t *testing.T) {
	dir := t.TempDir()
	code, out, _ := runOffq(t, context.Background(), "stat", "--dir", dir)
	if code != exitOK || !strings.Contains(out, "no buses in "+dir) {
		t.Errorf("empty directory: status %d, %q", code, out)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"stat", "--dir", dir, "--bus", "nosuch"}, exitRuntime, `stat: no bus "nosuch" in ` + dir},
		{[]string{"stat", "--dir", dir + "/missing"}, exitRuntime, "stat: "},
		{[]string{"stat", "extra"}, exitUsage, `stat takes no arguments (got "extra")`},
		{[]string{"top", "--interval", "1ms"}, exitUsage, "--interval 1ms"},
		{[]string{"top", "--iterations", "-1"}, exitUsage, "--iterations -1"},
	} {
		code, _, stderr := runOffq(t, context.Background(), tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("offq %s: status %d, stderr %q; want status %d and %q", strings.Join(tc.args, " "), code, stderr, tc.code, tc.want)
		}
	}
}

// TestStatBridge: stat (and top, which prints the same) shows a NATS bridge's counters, by
// its id, as docs/distributed.md says.
func TestStatBridge(t *testing.T) {
	dir := t.TempDir()
	b := statBusFixture(t, dir, "br")
	b.RecordBridgeCounters(bus.BridgeCounters{ID: "eu-1", Forwarded: 10, Imported: 20, Dropped: 3, Pending: 4, Gaps: 5,
		Mismatched: 6, Looped: 7, Disconnects: 8, Reconnects: 9})
	code, out, stderr := runOffq(t, context.Background(), "stat", "--dir", dir, "--bus", "br")
	want := "bridge eu-1 (tester["
	want2 := "DISCONNECTED, forwarded 10, imported 20, dropped 3, pending 4, gaps 5, mismatched 6, looped 7, disconnects 8, reconnects 9"
	if code != exitOK || !strings.Contains(out, want) || !strings.Contains(out, want2) {
		t.Errorf("stat: status %d, %s\n%s", code, stderr, out)
	}
	code, out, _ = runOffq(t, context.Background(), "stat", "--dir", dir, "--bus", "br", "--json")
	var rep statview.Report
	if code != exitOK || json.Unmarshal([]byte(out), &rep) != nil || len(rep.Buses) != 1 || len(rep.Buses[0].Participants) != 1 {
		t.Fatalf("stat --json: %d\n%s", code, out)
	}
	if br := rep.Buses[0].Participants[0].Bridge; br == nil || *br != (statview.Bridge{ID: "eu-1", Forwarded: 10, Imported: 20, Dropped: 3,
		Pending: 4, Gaps: 5, Mismatched: 6, Looped: 7, Disconnects: 8, Reconnects: 9}) {
		t.Errorf("stat --json bridge: %+v", br)
	}
	code, out, _ = runOffq(t, context.Background(), "top", "--dir", dir, "--bus", "br", "--iterations", "1")
	if code != exitOK || !strings.Contains(out, want2) {
		t.Errorf("top: %d\n%s", code, out)
	}
}

// ringStatBus opens bus "ring" in dir, with buffers large enough for a slot ring, closed when
// the test ends.
func ringStatBus(t *testing.T, dir string) *bus.Bus {
	t.Helper()
	cfg := transport.Config{
		Classes: []transport.Class{{Size: 4096, Count: 8}},
		Inboxes: 4, InboxCapacity: 8, Topics: 4, Participants: 4, Held: 8,
	}
	b, err := bus.Open("ring", bus.WithDir(dir), bus.WithConfig(cfg), bus.WithName("tester"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// A topic with a slot ring: stat shows the ring (shape, messages published, the writer) and,
// for each subscriber reading it, how far behind it is (in the ring's table and the inbox's
// ring_behind; its depth is its queue's).
func TestStatSlotRing(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b := ringStatBus(t, dir)
	s, err := b.Subscribe("r.x", bus.WithQueueDepth(4))
	if err != nil {
		t.Fatal(err)
	}
	p, err := b.Publisher("r.x", bus.WithSlotRing(8, 32))
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := p.Publish(ctx, make([]byte, 10)); err != nil {
			t.Fatal(err)
		}
	}
	m, err := s.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m.Release()
	code, out, stderr := runOffq(t, ctx, "stat", "--dir", dir, "--json")
	if code != exitOK {
		t.Fatalf("status %d: %s", code, stderr)
	}
	var rep statview.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	bs := rep.Buses[0]
	if len(bs.Topics) != 1 || bs.Topics[0].Ring == nil {
		t.Fatalf("topics: %+v", bs.Topics)
	}
	rg := *bs.Topics[0].Ring
	want := statview.Ring{Slots: 8, SlotBytes: 32, Published: 5, Writer: 0,
		Readers: []statview.RingReader{{Participant: 0, Inbox: bs.Inboxes[0].Inbox, Behind: 4}}}
	if rg.Slots != want.Slots || rg.SlotBytes != want.SlotBytes || rg.Published != want.Published || rg.Writer != want.Writer ||
		rg.Closed || len(rg.Readers) != 1 || rg.Readers[0] != want.Readers[0] {
		t.Errorf("ring: %+v, want %+v", rg, want)
	}
	if len(bs.Inboxes) != 1 || bs.Inboxes[0].Depth != 0 || bs.Inboxes[0].RingBehind != 4 {
		t.Errorf("inboxes: %+v (want depth 0: the queue holds nothing; ring_behind 4)", bs.Inboxes)
	}
	code, out, stderr = runOffq(t, ctx, "stat", "--dir", dir)
	if code != exitOK {
		t.Fatalf("status %d: %s", code, stderr)
	}
	_, table, ok := strings.Cut(out, "SLOT RING")
	if !ok || !strings.HasPrefix(table, "  SLOTS  SLOT ROOM  PUBLISHED  WRITER  READERS (PARTICIPANT/INBOX: BEHIND)") {
		t.Fatalf("no slot ring table:\n%s", out)
	}
	row := strings.Fields(strings.Split(table, "\n")[1])
	if want := []string{"r.x", "8", "32", "5", "0", fmt.Sprintf("0/%d:", bs.Inboxes[0].Inbox), "4"}; !slices.Equal(row, want) {
		t.Errorf("slot ring row %q, want %q", row, want)
	}
}

// TestStatSlotRoom: offq stat's slot ring column is a slot's room (SLOT ROOM; slot_bytes in
// the JSON), the size given to WithSlotRing rounded up to whole lines, and says so: for
// WithSlotRing(8, 40) it is 96, while the publisher refuses a 41-byte message. A column named
// SLOT BYTES read as the message limit, which the region does not record.
func TestStatSlotRoom(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b := ringStatBus(t, dir)
	p, err := b.Publisher("r.x", bus.WithSlotRing(8, 40))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, make([]byte, 41)); !errors.Is(err, bus.ErrTooLarge) {
		t.Fatalf("a 41-byte message: %v, want ErrTooLarge", err)
	}
	code, out, stderr := runOffq(t, ctx, "stat", "--dir", dir, "--json")
	if code != exitOK {
		t.Fatalf("status %d: %s", code, stderr)
	}
	var rep statview.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if rg := rep.Buses[0].Topics[0].Ring; rg == nil || rg.SlotBytes != 96 {
		t.Fatalf("slot ring %+v: want slot_bytes 96, the slot's room for WithSlotRing(8, 40)\n%s", rg, out)
	}
	code, out, stderr = runOffq(t, ctx, "stat", "--dir", dir)
	if code != exitOK {
		t.Fatalf("status %d: %s", code, stderr)
	}
	_, table, ok := strings.Cut(out, "SLOT RING")
	if !ok {
		t.Fatalf("no slot ring table:\n%s", out)
	}
	lines := strings.Split(table, "\n")
	if head := strings.Fields(lines[0]); len(head) < 3 || head[1] != "SLOT" || head[2] != "ROOM" {
		t.Errorf("slot ring table header %q: want its second column SLOT ROOM (the room, 96, is not the limit, 40)", lines[0])
	}
	if row := strings.Fields(lines[1]); len(row) < 3 || row[2] != "96" {
		t.Errorf("slot ring row %q: want 96 in SLOT ROOM", lines[1])
	}
}
