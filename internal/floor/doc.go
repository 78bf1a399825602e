// Package floor holds what offq's round trips and streams are measured against, with nothing
// of offq in them: RawPingPong, a counter passed between two processes through two words of a
// shared file, spinning (the floor for any shared-memory transport) or with a futex wake-up on
// every message; LinePingPong, the cache lines and locked operations of one offq message each
// way; PayloadPingPong, a payload each way on lines of its own or on the line that announces
// it; RawRing and RawPool, the floors of a one-way stream; and CPUs and PinThread, which keep
// a measuring loop on one core. It is used by the benchmarks only (internal/bench, `offq
// bench`, `go test -bench`), never on offq's data path, and it does not import offq's
// shared-memory protocol.
package floor
