package bridge_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/offq/offq/bridge"
	"github.com/offq/offq/bus"
	"github.com/offq/offq/codec"
)

type reading struct {
	Sensor  uint32
	Celsius float32
}

// Two buses (as on two hosts) bridged through one NATS server: a typed message published on
// the first is read, typed, on the second.
func Example() {
	ns, _ := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true})
	go ns.Start()
	defer ns.WaitForShutdown()
	defer ns.Shutdown()
	ns.ReadyForConnections(5 * time.Second)
	url := "nats://" + ns.Addr().String()

	dirA, _ := os.MkdirTemp("", "offq-a")
	dirB, _ := os.MkdirTemp("", "offq-b")
	defer os.RemoveAll(dirA)
	defer os.RemoveAll(dirB)
	busA, _ := bus.Open("plant", bus.WithDir(dirA))
	defer busA.Close()
	busB, _ := bus.Open("plant", bus.WithDir(dirB))
	defer busB.Close()

	brA, err := bridge.New(busA, url, bridge.WithExport("sensors.>"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer brA.Close()
	brB, err := bridge.New(busB, url, bridge.WithImport("sensors.>"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer brB.Close()

	c := codec.NewStruct[reading]()
	sub, _ := bus.NewTypedSubscription(busB, "sensors.>", c)
	pub, _ := bus.NewTypedPublisher(busA, "sensors.boiler", c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pub.Publish(ctx, &reading{Sensor: 7, Celsius: 81.5})

	m, err := sub.Receive(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	v, _ := m.View()
	fmt.Printf("%s: sensor %d at %.1f°C\n", m.Topic(), v.Sensor, v.Celsius)
	m.Release()
	// Output: sensors.boiler: sensor 7 at 81.5°C
}
