package bench

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/offq/offq/internal/peer"
)

// TestMain lets the test binary play the bench's children, as offq does.
func TestMain(m *testing.M) {
	peer.Dispatch(Roles)
	goleak.VerifyTestMain(m)
}
