// Package bridge connects a local offq bus to NATS, so that topics travel between hosts.
//
// A Bridge exports the local topics that match its export patterns to NATS subjects of the
// same names (NATS subject syntax is offq topic syntax), and imports the NATS subjects that
// match its import patterns into the local bus. See docs/distributed.md for deployment.
//
// # Wire format
//
// The payload travels unchanged as the NATS message's data. Headers carry what the local
// topic table knows about it:
//
//	Offq-Codec        the codec name recorded on the topic, on every message ("none" for
//	                  an untyped topic)
//	Offq-Fingerprint  the type fingerprint, 16 lower-case hex digits (absent for "none")
//	Offq-Origin       the exporting bridge's instance id
//	Offq-Seq          the message's sequence number on its topic on the origin bus
//	Offq-Skipped      origin sequence numbers just before this one not sent on purpose
//	                  (looped), so that the importer does not count them as gaps
//	Offq-Time         when it was published on the origin bus, Unix nanoseconds
//	Offq-Type         the Go type's name recorded on the topic ("main.Reading"; absent if none)
//
// The importer records codec, fingerprint and type name on the local topic the way typed publishers do
// (first claim wins); a message whose type differs from the one the local topic carries, and
// a message with no fingerprint (untyped, or from a NATS client that sends no offq headers)
// on a topic that records one, is refused and counted in Stats.Mismatched. The importer
// counts the origin sequence numbers it never sees, per origin and topic, in Stats.Gaps. An
// imported message's local Time and Age are those of its publish on the origin (Offq-Time,
// sent with bus.Loan.WithTime); one without the header is stamped when it is imported.

// # Delivery
//
// At most once. Stats.Forwarded counts a message handed to a connected NATS connection; one
// exported while NATS is down waits in nats.go's reconnect buffer (Stats.Pending) until the
// reconnect sends it, or is dropped if the bridge closes first. A message is lost, and
// counted in Stats.Dropped, when the bridge's local queue
// overflows (it is DropOldest, so a slow NATS never blocks local publishers), when nats.go
// refuses a publish (reconnect buffer full, connection closed), when the import subscription
// is a slow consumer, or when the local bus refuses it (pool exhausted). Messages written to
// a NATS server that dies before routing them are lost without a count: core NATS gives the
// sender no acknowledgement. Messages from one local publisher reach each remote subscriber
// in the order they were sent, as long as none is lost in between.
//
// # Requests
//
// Requests and replies cross hosts over NATS request/reply. A local request (bus
// Publisher.Request) on an exported topic is sent as a NATS request with the usual headers;
// the first NATS reply is delivered to the local requester's reply inbox. A NATS request
// (one with a reply subject) on an imported subject is sent on the local bus as a request;
// the first local reply goes back to the NATS requester. The bridge waits at most
// WithRequestTimeout (default 10s) for a reply; a request nobody answers is dropped and
// counted in Stats.Dropped, and the requester times out (the requester's deadline does not
// travel). A request imported by a bridge is not exported back (see Loop prevention). At most
// 256 exported requests wait at once; more are dropped.
//
// # Loop prevention
//
// A message imported from NATS is never exported back. The importer publishes it locally and
// records its (topic, sequence number, payload hash) in a bounded table under a lock held
// across the publish; the exporter, which receives every local message on its patterns,
// skips a message found in that table. On the NATS side the bridge connects with NoEcho and
// also ignores messages whose Offq-Origin is its own id.
//
// # Concurrency
//
// A Bridge runs goroutines of its own; its methods are safe for concurrent use.
package bridge
