package bus

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/offq/offq/internal/peer"
)

func TestMain(m *testing.M) {
	peer.Dispatch(map[string]peer.Role{
		"publisher":        rolePublisher,
		"subscriber":       roleSubscriber,
		"typed-publisher":  roleTypedPublisher,
		"typed-subscriber": roleTypedSubscriber,
		"crash-sub":        roleCrashSubscriber,
		"chaos-pub":        roleChaosPub,
		"chaos-sub":        roleChaosSub,
		"fanout-victim":    roleFanOutVictim,
		"fault-publish":    roleFaultPublish,
		"fault-lookup":     roleFaultLookup,
		"fault-open":       roleFaultOpen,
		"once-publisher":   roleOncePublisher,
		"batch-victim":     roleBatchVictim,
		"thousand-subs":    roleThousandSubs,
		"responder":        roleResponder,
		"requester":        roleRequester,
		"member":           roleMember,
		"ring-publisher":   roleRingPublisher,
	})
	goleak.VerifyTestMain(m)
}
