package statview

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/offq/offq/transport"
)

// TestSafe: names from shared memory cannot smuggle escape sequences or tabs to a terminal.
func TestSafe(t *testing.T) {
	if got := safe("a\x1b[2J\tb\xffc.é"); got != "a?[2J?b?c.é" {
		t.Errorf("safe = %q", got)
	}
}

func TestBetween(t *testing.T) {
	t0 := time.Unix(1000, 0)
	created := time.Unix(1, 0)
	in := func(id transport.InboxID, delivered, received, oldest uint64) Inbox {
		return Inbox{id: id, Inbox: id.Index(), Delivered: delivered, Received: received, Dropped: Drops{Oldest: oldest}}
	}
	prev := &Report{Time: t0, Buses: []Bus{
		{Name: "b", Created: created,
			Topics:  []Topic{{Name: "t", Published: 100, Bytes: 1000}},
			Inboxes: []Inbox{in(1, 100, 50, 10), in(2, 500, 500, 0)}},
		{Name: "recreated", Created: created, Topics: []Topic{{Name: "t", Published: 100}}},
	}}
	cur := &Report{Time: t0.Add(2 * time.Second), Buses: []Bus{
		{Name: "b", Created: created,
			Topics:  []Topic{{Name: "t", Published: 300, Bytes: 5000}, {Name: "new", Published: 7}},
			Inboxes: []Inbox{in(1, 200, 150, 30), in(2|1<<16, 4, 4, 0)}}, // slot 2 reopened: another generation
		{Name: "recreated", Created: created.Add(time.Second), Topics: []Topic{{Name: "t", Published: 10}}},
	}}
	r := Between(prev, cur)
	check := func(what string, m map[string]float64, key string, want float64, ok bool) {
		t.Helper()
		got, has := m[key]
		if has != ok || got != want {
			t.Errorf("%s %q: %v %v, want %v %v", what, key, got, has, want, ok)
		}
	}
	check("msgs/s", r.topicMsgs, topicKey("b", "t"), 100, true)
	check("bytes/s", r.topicBytes, topicKey("b", "t"), 2000, true)
	check("msgs/s of a new topic", r.topicMsgs, topicKey("b", "new"), 0, false)
	check("msgs/s of a re-created bus", r.topicMsgs, topicKey("recreated", "t"), 0, false)
	check("in/s", r.inboxIn, inboxKey("b", cur.Buses[0].Inboxes[0]), 50, true)
	check("out/s", r.inboxOut, inboxKey("b", cur.Buses[0].Inboxes[0]), 50, true)
	check("drops/s", r.inboxDrp, inboxKey("b", cur.Buses[0].Inboxes[0]), 10, true)
	check("in/s of a reopened slot", r.inboxIn, inboxKey("b", cur.Buses[0].Inboxes[1]), 0, false)
}

// goldenReports are two reports of one bus, a second apart, with a NATS bridge, a topic and
// an inbox that moved, and an inbox new in the second report.
func goldenReports() (prev, cur *Report) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	bus := func(published, delivered uint64) Bus {
		return Bus{Name: "plant", Path: "/dev/shm/offq.plant", OwnerUID: 3999999999, SizeBytes: 8 << 20, Created: t0.Add(-time.Hour),
			Reclaims: 1, CorruptWords: 0, Swept: 2, SweepOff: true, SweepReqs: 3, SweepPasses: 5,
			Participants: []Participant{
				{Index: 0, Name: "pub", PID: 10, Attached: t0, Alive: true},
				{Index: 1, Name: "br\x1b", PID: 11, Attached: t0, Bridge: &Bridge{ID: "eu-1", Forwarded: 3, Reconnects: 1}},
			},
			Topics: []Topic{{Name: "a.b", Published: published, Bytes: 100 * published, Publishers: 2, Subscribers: 1, HistoryDepth: 4,
				Codec: "msgpack", TypeName: "main.Reading\x1b", Fingerprint: "00000000deadbeef"}},
			Inboxes: []Inbox{{id: 3, Inbox: 3, Subscriber: "sub", Pattern: "a.>", Overflow: "drop-oldest", Depth: 2, Capacity: 8,
				Delivered: delivered, Received: delivered - 2, Dropped: Drops{Oldest: 1, Timeout: 2}}},
			Pools: []Pool{{Class: 0, Size: 256, Buffers: 64, InUse: 2, LowWater: 60, AllocFailures: 5}},
		}
	}
	prev = &Report{Dir: "/dev/shm", Time: t0, Buses: []Bus{bus(1000, 500)}}
	cur = &Report{Dir: "/dev/shm", Time: t0.Add(time.Second), Buses: []Bus{bus(13345, 505)}}
	cur.Buses[0].Inboxes = append(cur.Buses[0].Inboxes, Inbox{id: 4, Inbox: 4, Subscriber: "late", Pattern: "a.b", Overflow: "block", Capacity: 8})
	return prev, cur
}

// TestGolden pins offq top's tables (offq stat's, with rate columns) and offq stat --json's
// shape, byte for byte.
func TestGolden(t *testing.T) {
	prev, cur := goldenReports()
	var buf bytes.Buffer
	cur.Print(&buf, Between(prev, cur))
	if got := buf.String(); got != goldenTable {
		t.Errorf("tables:\n%s\nwant:\n%s", got, goldenTable)
	}
	buf.Reset()
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(cur); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); got != goldenJSON+"\n" {
		t.Errorf("JSON:\n%s\nwant:\n%s", got, goldenJSON)
	}
	buf.Reset()
	(&Report{Dir: "/x"}).Print(&buf, nil)
	if got := buf.String(); got != "no buses in /x\n" {
		t.Errorf("empty report: %q", got)
	}
}

const goldenTable = `bus plant  /dev/shm/offq.plant  8.0 MiB  created 2026-01-02T02:04:05Z  owner uid 3999999999
participants 1 alive, 1 dead   reclaims 1   swept 2 in 3 requested sweeps (5 passes) (sweep off: unrecorded takes)   corrupt words 0
  pub[10], br?[11] (dead)
  bridge eu-1 (br?[11]): DISCONNECTED, forwarded 3, imported 0, dropped 0, pending 0, gaps 0, mismatched 0, looped 0, disconnects 0, reconnects 1

TOPIC  PUBLISHED  BYTES    PUBS  SUBSCRIBERS  HISTORY  TYPE                   MSGS/S  BYTES/S
a.b    13345      1.3 MiB  2     1            4        msgpack main.Reading?  12.3k   1.23M

INBOX  SUBSCRIBER  PATTERN  OVERFLOW     DEPTH  CAPACITY  DELIVERED  RECEIVED  DROPPED  OLDEST  NEWEST  TIMEOUT  CORRUPT  IN/S  OUT/S  DROPS/S
3      sub         a.>      drop-oldest  2      8         505        503       3        1       0       2        0        5.0   5.0    0
4      late        a.b      block        0      8         0          0         0        0       0       0        0        -     -      -

POOL  SIZE  BUFFERS  IN USE  LOW WATER  ALLOC FAILURES
0     256B  64       2       60         5
`

const goldenJSON = `{
  "dir": "/dev/shm",
  "time": "2026-01-02T03:04:06Z",
  "buses": [
    {
      "name": "plant",
      "path": "/dev/shm/offq.plant",
      "owner_uid": 3999999999,
      "size_bytes": 8388608,
      "created": "2026-01-02T02:04:05Z",
      "reclaims": 1,
      "corrupt_words": 0,
      "swept": 2,
      "sweep_off": true,
      "sweep_requests": 3,
      "sweep_passes": 5,
      "sweep_pending": false,
      "participants": [
        {
          "index": 0,
          "name": "pub",
          "pid": 10,
          "attached": "2026-01-02T03:04:05Z",
          "alive": true
        },
        {
          "index": 1,
          "name": "br\u001b",
          "pid": 11,
          "attached": "2026-01-02T03:04:05Z",
          "alive": false,
          "bridge": {
            "id": "eu-1",
            "connected": false,
            "forwarded": 3,
            "imported": 0,
            "dropped": 0,
            "pending": 0,
            "gaps": 0,
            "mismatched": 0,
            "looped": 0,
            "disconnects": 0,
            "reconnects": 1
          }
        }
      ],
      "topics": [
        {
          "name": "a.b",
          "published": 13345,
          "bytes": 1334500,
          "publishers": 2,
          "subscribers": 1,
          "history_depth": 4,
          "codec": "msgpack",
          "type": "main.Reading\u001b",
          "fingerprint": "00000000deadbeef"
        }
      ],
      "inboxes": [
        {
          "inbox": 3,
          "subscriber": "sub",
          "pattern": "a.\u003e",
          "overflow": "drop-oldest",
          "depth": 2,
          "capacity": 8,
          "delivered": 505,
          "received": 503,
          "dropped": {
            "oldest": 1,
            "newest": 0,
            "timeout": 2,
            "corrupt": 0
          }
        },
        {
          "inbox": 4,
          "subscriber": "late",
          "pattern": "a.b",
          "overflow": "block",
          "depth": 0,
          "capacity": 8,
          "delivered": 0,
          "received": 0,
          "dropped": {
            "oldest": 0,
            "newest": 0,
            "timeout": 0,
            "corrupt": 0
          }
        }
      ],
      "pools": [
        {
          "class": 0,
          "size": 256,
          "buffers": 64,
          "in_use": 2,
          "low_water": 60,
          "alloc_failures": 5
        }
      ]
    }
  ]
}`
