//go:build offq_nonats

package bench

import "errors"

// haveNATS is false in a build with -tags offq_nonats: no embedded NATS server, no nats and
// bridge rows.
const haveNATS = false

func startNATS() (natsServer, error) {
	return nil, errors.New("built with -tags offq_nonats: no embedded NATS server")
}
