// Package demo is `offq demo`: a publisher and several subscribers as separate processes on a
// bus of their own, every message verified (checksum, order, drops against the inboxes'
// counters), with live rates, a table and a verdict.
//
// Run creates the bus, starts the children, follows them to the end and removes the bus. The
// children are this program re-executed through internal/peer in the role Role, told what to
// play by a typed argument and talking in JSON lines (wire.go); a program that calls Run must
// hand Roles to peer.Dispatch before anything else.
package demo
