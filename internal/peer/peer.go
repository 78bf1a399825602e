// Package peer runs multi-process tests: the test binary re-executes itself, and an
// environment variable tells the copy which role to play instead of running the tests.
//
// # Roles
//
// A role is a function of the child process. TestMain hands the package's roles to Dispatch
// before running the tests; in the parent Dispatch returns at once, in a child it runs the
// role named by OFFQ_PEER_ROLE and exits:
//
//	func TestMain(m *testing.M) {
//		peer.Dispatch(map[string]peer.Role{"producer": roleProducer})
//		os.Exit(m.Run())
//	}
//
// # Talking to a child
//
// Start re-executes the test binary with -test.run=^$ and the role's environment. The child's
// stdout is a line protocol: the child writes lines with Child.Send, the parent reads them
// with Proc.ReadLine or Proc.Expect, and the parent writes lines the child reads with
// Child.Recv. Use these lines (or the shared memory under test) to synchronise, never sleeps.
// Stderr, and stdout too in tests (not in benchmarks, whose logs are always printed), goes to
// the test log, prefixed with the role and pid.
//
// # Time bounds
//
// Every child is bounded in time. Start passes a deadline (Lifetime from now, or the test's
// own deadline if sooner); the child's Context is done at the deadline, and a child still
// running shortly after it exits with status 3 whatever it is doing. A child is killed with
// SIGKILL when the test that started it ends, and exits by itself (status 4) when the parent
// process is gone, however it ended: it holds the read end of a pipe, the lifeline, whose
// write end only the parent has. (The kernel's parent-death signal is no use here: it follows
// the thread that forked, and Go ends threads, such as locked ones, while the process lives.)
// Closing the child's stdin (Proc.CloseStdin) cancels the child's Context: it is how a parent
// tells a looping child to finish.
//
// # Exit status
//
// 0: the role returned nil. 1: it returned an error (printed on stderr). 2: unknown role or
// bad environment. 3: the deadline passed. 4: the parent is gone.
package peer

import "time"

// Environment variables that make a process a child.
const (
	EnvRole     = "OFFQ_PEER_ROLE"     // the role to run
	EnvDeadline = "OFFQ_PEER_DEADLINE" // when the child must be gone, Unix nanoseconds
	EnvLifeline = "OFFQ_PEER_LIFELINE" // descriptor of the lifeline pipe's read end
)

// Lifetime is the longest a child may live.
const Lifetime = 2 * time.Minute

// grace is how long after its deadline a child that did not finish is made to exit.
const grace = 2 * time.Second

// Role is the body of a child process. Its error becomes the exit status 1.
type Role func(c *Child) error
