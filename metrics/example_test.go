package metrics_test

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/offq/offq/bus"
	"github.com/offq/offq/metrics"
)

// A service that uses a bus registers a collector over it with its Prometheus registry.
func ExampleRegister() {
	dir, _ := os.MkdirTemp("", "offq-example")
	defer os.RemoveAll(dir)
	b, err := bus.Open("plant", bus.WithDir(dir), bus.WithName("controller"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()

	reg := prometheus.NewRegistry()
	c, err := metrics.Register(reg, b)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	b.Subscribe("sensors.>", bus.WithQueueDepth(8)) // receives nothing yet: its queue fills
	pub, _ := b.Publisher("sensors.temp")
	for range 3 {
		pub.Publish(context.Background(), []byte("21.5"))
	}

	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "offq_inbox_depth" && mf.GetName() != "offq_topic_messages_published_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			fmt.Printf("%s{%s} %v\n", mf.GetName(), strings.Join(labels, ","), m.GetGauge().GetValue()+m.GetCounter().GetValue())
		}
	}
	// Output:
	// offq_inbox_depth{bus="plant",inbox="0",pattern="sensors.>",subscriber="controller"} 3
	// offq_topic_messages_published_total{bus="plant",topic="sensors.temp"} 3
}
