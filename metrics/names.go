package metrics

import "github.com/prometheus/client_golang/prometheus"

// metric describes one metric the collector serves. The table below is the single list of
// them: Describe sends it, Collect uses it, and the tests check the documentation and the
// Grafana dashboard against it.
type metric struct {
	name   string
	help   string
	typ    prometheus.ValueType
	labels []string
	desc   *prometheus.Desc
	hist   bool // a histogram (typ unused)
}

func newMetric(name string, typ prometheus.ValueType, help string, labels ...string) *metric {
	return &metric{name: name, help: help, typ: typ, labels: labels,
		desc: prometheus.NewDesc(name, help, labels, nil)}
}

// newHistogram describes a histogram: its samples are name_bucket, name_sum and name_count.
func newHistogram(name, help string, labels ...string) *metric {
	m := newMetric(name, prometheus.UntypedValue, help, labels...)
	m.hist = true
	return m
}

const (
	gauge   = prometheus.GaugeValue
	counter = prometheus.CounterValue
)

// Region metrics: labels bus.
var (
	mRegionSize = newMetric("offq_region_size_bytes", gauge,
		"Size of the bus's shared-memory region.", "bus")
	mRegionCreated = newMetric("offq_region_created_timestamp_seconds", gauge,
		"When the bus's region was created, in seconds since the Unix epoch; a change means the bus was re-created and its counters restarted.", "bus")
	mReclaims = newMetric("offq_reclaims_total", counter,
		"Participants whose process died and whose buffers, inboxes and slot were reclaimed.", "bus")
	mSwept = newMetric("offq_buffers_swept_total", counter,
		"Buffers found allocated with a reference nobody held (left by a process killed in the middle of moving it) and freed by a reaper's sweep.", "bus")
	mSweepRequests = newMetric("offq_sweep_requests_total", counter,
		"Orphan sweeps requested: by a reaper that reclaimed a dead participant, a loan that found the pools exhausted, or a program.", "bus")
	mSweepSteps = newMetric("offq_sweep_steps_total", counter,
		"Steps of requested orphan sweeps made (each reads the state words of up to 32768 buffers); nothing is swept without a request.", "bus")
	mCorrupt = newMetric("offq_region_corrupt_words_total", counter,
		"Words found corrupt in the region (bad handles, cells, lengths) and dropped instead of used.", "bus")
	mParticipants = newMetric("offq_participants", gauge,
		"Attached participants (processes), by state: alive, or dead and awaiting reclaim.", "bus", "state")
	mSlots = newMetric("offq_table_slots", gauge,
		"Size of each of the region's fixed tables (participants, inboxes, topics).", "bus", "table")
	mSlotsUsed = newMetric("offq_table_slots_used", gauge,
		"Slots in use in each of the region's fixed tables (participants, inboxes, topics); when it reaches offq_table_slots, attaching, subscribing or creating a topic fails.", "bus", "table")
)

// Pool metrics: labels bus, class (the payload size of the class's buffers, "256B", "4KiB").
var (
	mPoolBuffers = newMetric("offq_pool_buffers", gauge,
		"Buffers in the size class's pool.", "bus", "class")
	mPoolInUse = newMetric("offq_pool_buffers_in_use", gauge,
		"Buffers of the size class allocated now (loaned, queued, held or kept in a history).", "bus", "class")
	mPoolLowWater = newMetric("offq_pool_low_water_buffers", gauge,
		"Fewest free buffers the size class was seen to have since the region was created; sampled (every 256 allocations of a process, at exhaustion, and when a process attached to the bus reads its stats), so a short peak may be missed.", "bus", "class")
	mPoolAllocFails = newMetric("offq_pool_alloc_failures_total", counter,
		"Allocations that failed because every buffer of the size class (the smallest that fits) and of every larger class was in use.", "bus", "class")
)

// Topic metrics: labels bus, topic.
var (
	mTopicPublished = newMetric("offq_topic_messages_published_total", counter,
		"Messages published on the topic.", "bus", "topic")
	mTopicBytes = newMetric("offq_topic_bytes_published_total", counter,
		"Payload bytes published on the topic.", "bus", "topic")
	mTopicSubscribers = newMetric("offq_topic_subscribers", gauge,
		"Open subscriptions whose pattern matches the topic.", "bus", "topic")
	mTopicPublishers = newMetric("offq_topic_publishers", gauge,
		"Participants (processes) with a publisher of the topic open.", "bus", "topic")
	mTopicRequests = newMetric("offq_topic_requests_total", counter,
		"Requests sent on the topic (request/reply).", "bus", "topic")
	mTopicReplies = newMetric("offq_topic_replies_total", counter,
		"Replies sent to the topic's requests.", "bus", "topic")
	mTopicRequestFailures = newMetric("offq_topic_request_failures_total", counter,
		"Requests on the topic that got no reply, by reason: timeout (the requester's deadline passed), no_responders (no subscription matched), responder_died (the process that took it died before replying).", "bus", "topic", "reason")
	mTopicGroupDropped = newMetric("offq_topic_queue_group_dropped_total", counter,
		"Messages of the topic queued for a queue-group member that left (closed its subscription, or died and was reaped) before taking them: released, not redelivered.", "bus", "topic")
	mTopicRingSlots = newMetric("offq_topic_ring_slots", gauge,
		"Slots of the topic's slot ring (bus.WithSlotRing); served only for a topic that has one: the bound of offq_inbox_ring_behind for its readers.", "bus", "topic")
	mTopicInUse = newMetric("offq_topic_buffers_in_use", gauge,
		"Buffers of the size class holding a message of the topic now: queued in inboxes, received and not released, or kept in its history (counted at scrape time from the slot headers; loans are counted on their participant).", "bus", "topic", "class")
)

// Participant metrics: labels bus, participant (slot index), name (the participant's name),
// class. Counted at scrape time from the slots' state words and the participants' held lists.
var (
	mParticipantHeld = newMetric("offq_participant_buffers_held", gauge,
		"Messages of the size class the participant received and has not released (buffers it keeps from the pool).", "bus", "participant", "name", "class")
	mParticipantLoaned = newMetric("offq_participant_buffers_loaned", gauge,
		"Buffers of the size class the participant has on loan: lent to it, not yet sent or discarded.", "bus", "participant", "name", "class")
)

// Bridge metrics: labels bus, bridge (the bridge's id: offq bridge --id, bridge.WithID, or
// the random id it chose; the participant's name if the slot records none), participant (its
// slot index). A NATS bridge keeps them in its participant slot (refreshed twice a second),
// so they are served for every bridge attached to a bus, by whoever reads the region.
var (
	mBridgeForwarded = newMetric("offq_bridge_forwarded_total", counter,
		"Local messages the NATS bridge handed to its connected NATS connection.", "bus", "bridge", "participant")
	mBridgeImported = newMetric("offq_bridge_imported_total", counter,
		"NATS messages the bridge published on the local bus.", "bus", "bridge", "participant")
	mBridgeDropped = newMetric("offq_bridge_dropped_total", counter,
		"Messages the bridge lost and counted: local queue overflow, NATS refusal or slow consumer, local refusal, reconnect buffer discarded at close.", "bus", "bridge", "participant")
	mBridgeReconnects = newMetric("offq_bridge_reconnects_total", counter,
		"Times the bridge reconnected to NATS.", "bus", "bridge", "participant")
	mBridgeDisconnects = newMetric("offq_bridge_disconnects_total", counter,
		"Times the bridge lost its NATS connection (not counting its own close).", "bus", "bridge", "participant")
	mBridgeConnected = newMetric("offq_bridge_connected", gauge,
		"1 when the bridge's NATS connection is up, 0 when it is down.", "bus", "bridge", "participant")
	mBridgePending = newMetric("offq_bridge_pending_messages", gauge,
		"Messages exported while NATS was down, waiting in the reconnect buffer (sent at the reconnect, dropped if the bridge closes first).", "bus", "bridge", "participant")
	mBridgeMismatched = newMetric("offq_bridge_mismatched_total", counter,
		"NATS messages the bridge refused because their codec or type differs from the local topic's (untyped bytes on a typed topic included).", "bus", "bridge", "participant")
	mBridgeLooped = newMetric("offq_bridge_looped_total", counter,
		"Messages the bridge did not send back because it had imported them (or sent them).", "bus", "bridge", "participant")
	mBridgeGaps = newMetric("offq_bridge_gaps_total", counter,
		"Messages the bridge never received from NATS: missing origin sequence numbers of a topic, per origin bridge.", "bus", "bridge", "participant")
)

// Inbox metrics: labels bus, inbox (slot index), pattern, subscriber (participant name).
var (
	mInboxDepth = newMetric("offq_inbox_depth", gauge,
		"Messages queued in the subscription's inbox, not yet taken by the subscriber.", "bus", "inbox", "pattern", "subscriber")
	mInboxCapacity = newMetric("offq_inbox_capacity", gauge,
		"Messages the subscription's inbox can hold.", "bus", "inbox", "pattern", "subscriber")
	mInboxRingBehind = newMetric("offq_inbox_ring_behind", gauge,
		"Messages of its topic's slot ring the subscriber has not read yet (0 if it reads none).", "bus", "inbox", "pattern", "subscriber")
	mInboxBlocked = newMetric("offq_inbox_blocked_publishers", gauge,
		"Publishers waiting for room in the subscription's full inbox (block overflow policy only).", "bus", "inbox", "pattern", "subscriber")
	mInboxDelivered = newMetric("offq_inbox_delivered_total", counter,
		"Messages placed in the subscription's inbox since it was opened (including those later dropped as oldest).", "bus", "inbox", "pattern", "subscriber")
	mInboxReceived = newMetric("offq_inbox_received_total", counter,
		"Messages the subscriber took from its inbox since it was opened.", "bus", "inbox", "pattern", "subscriber")
	mDropped = newMetric("offq_messages_dropped_total", counter,
		"Messages lost by the subscription, by reason: oldest (evicted from a full drop-oldest inbox), newest (refused by a full drop-newest inbox), timeout (a blocking publisher gave up), corrupt (a bad cell was skipped).",
		"bus", "inbox", "pattern", "subscriber", "reason")
	mMessageAge = newHistogram("offq_message_age_seconds",
		"Age of the messages the subscriber took from its inbox (or its topic's slot ring) since it was opened, at the take: from the publish time (stamped in the message when published, or carried over by a bridge) to Receive. Buckets double from 1µs to about 8.4s.",
		"bus", "inbox", "pattern", "subscriber")
)

// Collector metrics (NewCollector only): no labels.
var (
	mCollectorRegions = newMetric("offq_collector_regions", gauge,
		"Regions the collector exported at this scrape.")
	mCollectorOpenFails = newMetric("offq_collector_open_failures_total", counter,
		"Times the collector found a region it could not open (not a valid region, another user's, unreadable).")
	mBuildInfo = newMetric("offq_build_info", gauge,
		"Always 1; its labels say which build of offq serves the metrics: the main module's version (\"(devel)\" when built from a checkout) and the Go version it was built with.",
		"version", "goversion")
)

// regionMetrics are the metrics of one region; collectorMetrics those about the collector.
var (
	regionMetrics = []*metric{
		mRegionSize, mRegionCreated, mReclaims, mSwept, mSweepRequests, mSweepSteps, mCorrupt, mParticipants, mSlots, mSlotsUsed,
		mPoolBuffers, mPoolInUse, mPoolLowWater, mPoolAllocFails,
		mTopicPublished, mTopicBytes, mTopicSubscribers, mTopicPublishers, mTopicInUse,
		mTopicRequests, mTopicReplies, mTopicRequestFailures, mTopicGroupDropped, mTopicRingSlots,
		mParticipantHeld, mParticipantLoaned,
		mInboxDepth, mInboxCapacity, mInboxRingBehind, mInboxBlocked, mInboxDelivered, mInboxReceived, mDropped, mMessageAge,
		mBridgeForwarded, mBridgeImported, mBridgeDropped, mBridgeReconnects,
		mBridgeDisconnects, mBridgeConnected, mBridgePending, mBridgeMismatched, mBridgeLooped, mBridgeGaps,
	}
	collectorMetrics = []*metric{mCollectorRegions, mCollectorOpenFails, mBuildInfo}
)

// Label values of offq_messages_dropped_total's reason, offq_participants's state and
// offq_table_slots's table.
const (
	reasonOldest  = "oldest"
	reasonNewest  = "newest"
	reasonTimeout = "timeout"
	reasonCorrupt = "corrupt"

	reasonNoResponders  = "no_responders"
	reasonResponderDied = "responder_died"

	stateAlive = "alive"
	stateDead  = "dead"

	tableParticipants = "participants"
	tableInboxes      = "inboxes"
	tableTopics       = "topics"
)
