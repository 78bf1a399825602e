//go:build !offq_nonats

package bench

import (
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// haveNATS says whether this build embeds a NATS server for the nats and bridge rows. It is
// about 20 MB of the offq binary; -tags offq_nonats leaves it out.
const haveNATS = true

// startNATS runs an embedded nats-server on a free loopback port.
func startNATS() (natsServer, error) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, MaxPayload: maxBenchSize + 1024, MaxPending: 2 * maxBenchSize})
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("nats server did not start")
	}
	return srv, nil
}
