// Package bench is `offq bench`: offq between processes beside the transports a user would
// otherwise pick (raw shared memory and futex floors from internal/floor, Unix sockets, pipes,
// NATS, offq's NATS bridge), measured in one run so that their ratios hold on a noisy machine.
//
// # Plan, run, report
//
// Flags parses the command's flags into Options; Options.plan lists the measurements, each
// baseline right after the offq case it is compared with; Run makes them and writes the
// report (a markdown table, or the JSON contract documented in Help) while a progress bar
// goes to stderr. offq goes through package bus only.
//
// # Children
//
// The other side of every measurement is this program re-executed through internal/peer, in
// the one role Role, told what to play by a typed argument. A program that calls Run must hand
// Roles to peer.Dispatch before anything else (offq's main and the tests' TestMain do).
//
// # go test -bench
//
// BenchmarkPingPong (pingpong_bench_test.go) runs the same ping-pong cases with b.N timed
// round trips, so that `go test -bench` and `offq bench` always measure the same thing.
//
// # Builds
//
// The nats and bridge rows need an embedded NATS server, about 14 MB of the binary; a build
// with -tags offq_nonats leaves it out, and those rows with it.
package bench
