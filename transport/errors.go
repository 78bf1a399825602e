package transport

import "github.com/offq/offq/internal/shm"

// Errors, the same values bus returns, so errors.Is works across the tiers.
var (
	// ErrCorrupt marks a region that is not a valid offq region, or whose memory faulted.
	ErrCorrupt = shm.ErrCorrupt
	// ErrVersion: the region was written by an incompatible layout version.
	ErrVersion = shm.ErrVersion
	// ErrIncompatibleConfig: the region exists with another configuration.
	ErrIncompatibleConfig = shm.ErrIncompatibleConfig
	// ErrNotReady: the region did not become ready within the timeout.
	ErrNotReady = shm.ErrNotReady
	// ErrExists: Create found a region of that name.
	ErrExists = shm.ErrExists
	// ErrNotFound: no region of that name.
	ErrNotFound = shm.ErrNotFound
	// ErrPermission: the file is a link, not a regular file, or another user's.
	ErrPermission = shm.ErrPermission
	// ErrInvalidConfig: a configuration that cannot describe a region.
	ErrInvalidConfig = shm.ErrInvalidConfig
	// ErrClosed: the region was closed.
	ErrClosed = shm.ErrClosed
)

// Error is the error of an operation on a region: Op, the region's Name, and the cause.
type Error = shm.Error
