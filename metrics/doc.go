// Package metrics exports the counters of offq buses to Prometheus.
//
// Every bus keeps its counters in its shared-memory region (package transport, Region.Stats):
// per pool, per topic, per inbox, per region. A Collector reads them, without joining the
// bus, and turns one snapshot per region and scrape into metrics labelled with the bus's
// name, so one process can export every bus of a host. This package is the only one in offq
// that imports the Prometheus client; bus and transport know nothing of it.
//
// # Using it
//
// In a service that uses a bus and a Prometheus registry, Register adds a Collector over that
// bus:
//
//	c, err := metrics.Register(prometheus.DefaultRegisterer, b)
//	...
//	defer c.Close()
//
// In a service without a registry, serve Handler (the same as offq exporter serves):
//
//	http.Handle("/metrics", metrics.Handler(metrics.NewCollector(metrics.Options{Dir: dir}), nil))
//
// For every bus of a host, run offq exporter, which serves Handler over NewCollector for a
// directory. NewRegionCollector exports one region the caller has opened itself, for
// instance read-only.
//
// # Metrics
//
// Names and labels follow the Prometheus conventions: base units, _total for counters,
// one label per dimension. docs/metrics.md describes each metric with an alerting suggestion.
//
//	offq_region_size_bytes, offq_region_created_timestamp_seconds     {bus}
//	offq_reclaims_total, offq_buffers_swept_total,
//	offq_sweep_requests_total, offq_sweep_steps_total,
//	offq_region_corrupt_words_total                                   {bus}
//	offq_participants                                                 {bus, state="alive|dead"}
//	offq_table_slots, offq_table_slots_used                           {bus, table="participants|inboxes|topics"}
//	offq_pool_buffers, offq_pool_buffers_in_use,
//	offq_pool_low_water_buffers, offq_pool_alloc_failures_total       {bus, class}
//	offq_topic_messages_published_total,
//	offq_topic_bytes_published_total, offq_topic_subscribers,
//	offq_topic_publishers, offq_topic_requests_total,
//	offq_topic_replies_total, offq_topic_queue_group_dropped_total    {bus, topic}
//	offq_topic_request_failures_total                                 {bus, topic, reason="timeout|no_responders|responder_died"}
//	offq_topic_ring_slots (a topic with a slot ring only)             {bus, topic}
//	offq_topic_buffers_in_use                                         {bus, topic, class}
//	offq_participant_buffers_held, offq_participant_buffers_loaned    {bus, participant, name, class}
//	offq_inbox_depth, offq_inbox_capacity, offq_inbox_ring_behind,
//	offq_inbox_blocked_publishers, offq_inbox_delivered_total,
//	offq_inbox_received_total, offq_message_age_seconds (histogram)   {bus, inbox, pattern, subscriber}
//	offq_messages_dropped_total                                       {bus, inbox, pattern, subscriber, reason="oldest|newest|timeout|corrupt"}
//	offq_bridge_forwarded_total, offq_bridge_imported_total,
//	offq_bridge_dropped_total, offq_bridge_connected,
//	offq_bridge_pending_messages, offq_bridge_disconnects_total,
//	offq_bridge_reconnects_total, offq_bridge_mismatched_total,
//	offq_bridge_looped_total, offq_bridge_gaps_total                  {bus, bridge, participant}
//	offq_collector_regions, offq_collector_open_failures_total,
//	offq_build_info                                                   (NewCollector only)
//
// class is the payload size of a pool's buffers ("256B", "4KiB"); inbox is the inbox's slot
// index, which keeps two subscriptions with the same pattern and participant name apart;
// subscriber is the name the participant attached with (bus.WithName); bridge is a NATS
// bridge's id (offq bridge --id), not its participant name.
//
// # Cardinality
//
// Every series comes from a fixed-size table of the region, so the number of series per bus
// is bounded by its configuration: 15 for the region, 4 per size class (at most 8 classes), 10
// per topic plus 1 per topic and class and 1 more per topic with a slot ring (at most
// Config.Topics; an audit frees unused ones), 2 per attached participant and class, 10 per
// bridge, and 37 per open inbox (at most Config.Inboxes; 27 of them the age histogram's).
// With the default configuration and 16 participants that is at most
// 15 + 16 + 2,560 + 1,024 + 256 + 128 + 2,368 = 6,367 series (docs/metrics.md; a test counts
// them). Inbox slots are reused: a new subscription in a slot brings new pattern and
// subscriber values, and the old series end.
//
// # Consistency
//
// Counters are read one at a time while the bus runs, so within one scrape they may disagree
// by the operations under way (a message counted as published but not yet delivered). Inbox
// counters start at zero when the subscription opens, and a re-created bus restarts every
// counter: both look like counter resets to Prometheus, which rate() handles.
package metrics
