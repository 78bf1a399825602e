package demo

// What the demo's processes say to each other: the payload format the publisher writes and
// the subscribers verify, and the JSON lines on the children's stdin and stdout.

import (
	"encoding/binary"
	"hash/crc32"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// demoTopics are the topics the demo publishes on; a payload names its topic by index.
var demoTopics = [...]string{"demo.temp", "demo.pressure"}

func topicIndex(name string) int {
	for i, t := range demoTopics {
		if t == name {
			return i
		}
	}
	return -1
}

// Payload layout, little-endian:
//
//	[0:4]    topic index
//	[4:12]   sequence number on the topic (1, 2, ...)
//	[12:n-4] pseudo-random fill, a function of topic and sequence only
//	[n-4:n]  CRC-32C of bytes [0:n-4]
const (
	minPayload = 16
	maxPayload = 1 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// fillSeed is where a payload's fill stream starts.
func fillSeed(topic uint32, seq uint64) uint64 {
	return (seq<<1 | uint64(topic&1)) ^ 0x2545f4914f6cdd1d
}

// splitmix64 advances x and returns the next value of its stream.
func splitmix64(x *uint64) uint64 {
	*x += 0x9e3779b97f4a7c15
	z := *x
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// writePayload fills b (len(b) >= minPayload) with the payload for (topic, seq).
func writePayload(b []byte, topic uint32, seq uint64) {
	n := len(b)
	binary.LittleEndian.PutUint32(b[0:], topic)
	binary.LittleEndian.PutUint64(b[4:], seq)
	x := fillSeed(topic, seq)
	fill := b[12 : n-4]
	for len(fill) >= 8 {
		binary.LittleEndian.PutUint64(fill, splitmix64(&x))
		fill = fill[8:]
	}
	if len(fill) > 0 {
		var last [8]byte
		binary.LittleEndian.PutUint64(last[:], splitmix64(&x))
		copy(fill, last[:])
	}
	binary.LittleEndian.PutUint32(b[n-4:], crc32.Checksum(b[:n-4], castagnoli))
}

// checkPayload verifies b's checksum and fill and returns the topic and sequence it holds.
// It allocates nothing.
func checkPayload(b []byte) (topic uint32, seq uint64, ok bool) {
	n := len(b)
	if n < minPayload {
		return 0, 0, false
	}
	if crc32.Checksum(b[:n-4], castagnoli) != binary.LittleEndian.Uint32(b[n-4:]) {
		return 0, 0, false
	}
	topic = binary.LittleEndian.Uint32(b[0:])
	seq = binary.LittleEndian.Uint64(b[4:])
	x := fillSeed(topic, seq)
	fill := b[12 : n-4]
	for len(fill) >= 8 {
		if binary.LittleEndian.Uint64(fill) != splitmix64(&x) {
			return topic, seq, false
		}
		fill = fill[8:]
	}
	if len(fill) > 0 {
		var last [8]byte
		binary.LittleEndian.PutUint64(last[:], splitmix64(&x))
		if string(fill) != string(last[:len(fill)]) {
			return topic, seq, false
		}
	}
	return topic, seq, true
}

// Line types a child writes on its stdout.
const (
	msgReady    = "ready"    // attached and subscribed (or publishers created)
	msgProgress = "progress" // counters so far, every progressEvery
	msgDone     = "done"     // publisher: finished; Final holds the last sequence per topic
	msgSummary  = "summary"  // subscriber: finished draining; the final counters
)

// peerMsg is one line a child writes on its stdout.
type peerMsg struct {
	Type string `json:"type"`
	Name string `json:"name"`
	PID  int    `json:"pid,omitempty"`

	// Subscriber counters.
	Received uint64 `json:"received,omitempty"`
	Dropped  uint64 `json:"dropped,omitempty"`  // sequence gaps: messages never received
	Corrupt  uint64 `json:"corrupt,omitempty"`  // bad checksum, fill, topic or sequence
	Disorder uint64 `json:"disorder,omitempty"` // a sequence at or below one already seen
	Reached  bool   `json:"reached,omitempty"`  // saw the final sequence of every topic
	Latency  *lat   `json:"latency,omitempty"`  // publish to receive

	// Publisher counters.
	Sent      uint64            `json:"sent,omitempty"`
	Stalls    uint64            `json:"stalls,omitempty"` // loans refused: pool exhausted
	ElapsedNS int64             `json:"elapsed_ns,omitempty"`
	Final     map[string]uint64 `json:"final,omitempty"`
	SendTime  *lat              `json:"send_time,omitempty"` // Loan + write + Send
}

// parentMsg is one line the parent writes on a subscriber's stdin. Closing stdin tells a
// child to finish at once.
type parentMsg struct {
	Final map[string]uint64 `json:"final"` // the publisher's last sequence per topic
}

// lat summarises a latency histogram, in nanoseconds.
type lat struct {
	Count int64 `json:"count"`
	P50   int64 `json:"p50"`
	P99   int64 `json:"p99"`
	P999  int64 `json:"p999"`
	Max   int64 `json:"max"`
}

// newHist returns a histogram of 1 ns to 100 s at 3 significant digits.
func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, 100e9, 3) }

func record(h *hdrhistogram.Histogram, ns int64) {
	h.RecordValue(min(max(ns, 1), h.HighestTrackableValue()))
}

func summarise(h *hdrhistogram.Histogram) *lat {
	return &lat{Count: h.TotalCount(), P50: h.ValueAtQuantile(50), P99: h.ValueAtQuantile(99),
		P999: h.ValueAtQuantile(99.9), Max: h.Max()}
}
