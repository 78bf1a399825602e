// Package peer is offq's one way of running a program as several processes: tests,
// examples, `offq bench` and `offq demo` re-execute their own binary, and an environment
// variable tells the copy which role to play instead of doing what the binary normally does.
//
// # Roles
//
// A role is a function of the child process. The binary hands its roles to Dispatch before
// anything else runs (first thing in TestMain, or in main before the command line is parsed);
// in the parent Dispatch returns at once, in a child it runs the role named by OFFQ_PEER_ROLE
// and exits:
//
//	func TestMain(m *testing.M) {
//		peer.Dispatch(map[string]peer.Role{"producer": roleProducer})
//		os.Exit(m.Run())
//	}
//
// # Talking to a child
//
// Launch starts a child from a Spec; Start is its form for tests (it re-executes the test
// binary with -test.run=^$, logs the child's output to the test and kills it when the test
// ends). The parent may hand the child one typed argument (Spec.Arg, read with Child.Arg) and
// files of its own (Spec.Files, Child.File). After that the two talk in lines, both ways: the
// child's stdout and its stdin. A line is text (Child.Send, Proc.ReadLine, Proc.Expect) or one
// JSON value (Child.Encode and Proc.Decode; Proc.Encode and Child.Decode), so that messages are
// typed. Use these lines (or the shared memory under test) to synchronise, never sleeps.
//
// # Lifetime
//
// A child never outlives its parent, however the parent ends, and never runs unbounded:
//
//   - Stop. Closing the child's stdin (Proc.CloseStdin, Proc.Stop) cancels the child's Context:
//     it is how a parent tells a child to finish. Proc.Stop then waits a bounded time and kills
//     the child with SIGKILL if it has not exited.
//   - The lifeline. The child holds the read end of a pipe whose write end only the parent
//     has; when the parent is gone (a kill -9 runs no cleanups), the child reads end of file
//     and exits with status 4.
//   - The parent-death signal, as a backstop: the kernel sends the child SIGKILL when its
//     parent dies. The kernel follows the *thread* that forked, and Go ends threads (a
//     goroutine that exits locked to its thread takes the thread with it, as the bench's
//     pinned loops do), so every child is forked from one goroutine locked to its thread that
//     lives while any child does (see spawn.go).
//   - The deadline. Every child has one (Spec.Deadline, or Lifetime from now); its Context is
//     done then, and a child still running shortly after exits with status 3 whatever it is
//     doing.
//   - Start. Launch returns once the child runs the role: the child says hello on its stdout
//     first, and a child that does not within StartTimeout is killed and reported.
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
	EnvArg      = "OFFQ_PEER_ARG"      // the role's argument, JSON
)

// Lifetime is the longest a child may live unless its Spec says otherwise.
const Lifetime = 2 * time.Minute

// StartTimeout bounds how long Launch waits for a child to start running its role.
const StartTimeout = 30 * time.Second

// grace is how long after its deadline a child that did not finish is made to exit.
const grace = 2 * time.Second

// hello is the first line every child writes, before its role runs.
const hello = "\x00peer hello"

// Exit statuses of a child.
const (
	exitFailed   = 1
	exitUsage    = 2
	exitDeadline = 3
	exitOrphaned = 4
)

// Role is the body of a child process. Its error becomes the exit status 1.
type Role func(c *Child) error
