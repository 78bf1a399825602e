package metrics

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/offq/offq/internal/peer"
)

func TestMain(m *testing.M) {
	peer.Dispatch(map[string]peer.Role{
		"publisher":    rolePublisher,
		"subscriber":   roleSubscriber,
		"scraper":      roleScraper,
		"fault-gather": roleFaultGather,
	})
	goleak.VerifyTestMain(m)
}
