package shm

import (
	"os"
	"testing"

	"github.com/offq/offq/internal/peer"
)

// TestMain lets the test binary play the roles of other processes: a child started with
// peer.Start runs its role and exits here instead of running the tests.
func TestMain(m *testing.M) {
	peer.Dispatch(peerRoles)
	os.Exit(m.Run())
}

// peerRoles are the parts a child process of this package's tests can play.
var peerRoles = map[string]peer.Role{
	// multiproc_test.go
	"open-or-create": roleOpenOrCreate,
	"producer":       roleProducer,
	"sleep-pong":     roleSleepPong,
	// reap_test.go
	"reap-victim": roleReapVictim,
	"reaper":      roleReaper,
	"creator-mid": roleCreatorMid,
	// sweepcost_test.go
	"sweeper": roleSweeper,
	"leaker":  roleLeaker,
	// topictable_test.go
	"fp-claimer": roleFingerprintClaimer,
	// topicreclaim_test.go
	"typo-publisher": roleTypoPublisher,
	// pins_test.go
	"pin-publisher":     rolePinPublisher,
	"stuck-reclaimer":   roleStuckReclaimer,
	"claimed-reclaimer": roleClaimedReclaimer,
	// evict_test.go
	"evictor": roleEvictor,
	// waiters_test.go
	"sleeper":      roleSleeper,
	"block-pusher": roleBlockPusher,
	// doorbell_test.go
	"bell-sleeper": roleBellSleeper,
	// slotring_test.go
	"ring-writer": roleRingWriter,
}
