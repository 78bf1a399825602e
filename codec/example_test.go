package codec_test

import (
	"fmt"
	"os"

	"github.com/offq/offq/codec"
)

type Reading struct {
	Seq     uint64
	Celsius float64
	Sensor  [8]byte
}

type Event struct {
	Sensor string   `msgpack:"sensor"`
	Temp   float64  `msgpack:"temp"`
	Tags   []string `msgpack:"tags"`
}

// A pointer-free struct is carried as its own memory: the buffer is the value.
func ExampleStruct() {
	c := codec.NewStruct[Reading]()
	b := make([]byte, c.Size()) // stands for a loaned buffer in shared memory
	r, err := c.View(b)
	if err != nil {
		fmt.Println(err)
		return
	}
	r.Seq, r.Celsius = 1, 21.5 // written in place
	var back Reading
	c.Decode(b, &back)
	fmt.Println(back.Seq, back.Celsius, c.Size())

	// A type with a pointer in it is refused, naming the field.
	_, err = codec.NewStruct[Event]().Fingerprint()
	fmt.Println(err)
	// Output:
	// 1 21.5 24
	// codec: struct codec cannot carry codec_test.Event: codec_test.Event.Sensor: string (a string points to its bytes)
}

// Msgpack encodes into the buffer it is given, and says when the buffer is too small.
func ExampleMsgpack() {
	c := codec.NewMsgpack[Event]()
	v := Event{Sensor: "line1", Temp: 21.5, Tags: []string{"plant"}}
	small := make([]byte, 8)
	if _, err := c.Encode(small, &v); err == codec.ErrShortBuffer {
		fmt.Println("8 bytes are too few")
	}
	buf := make([]byte, 256)
	n, _ := c.Encode(buf, &v)
	var back Event
	c.Decode(buf[:n], &back)
	fmt.Printf("%d bytes: %+v\n", n, back)
	// Output:
	// 8 bytes are too few
	// 40 bytes: {Sensor:line1 Temp:21.5 Tags:[plant]}
}

// MsgpackToJSON prints a msgpack message without knowing its Go type.
func ExampleMsgpackToJSON() {
	c := codec.NewMsgpack[Event]()
	buf := make([]byte, 256)
	n, _ := c.Encode(buf, &Event{Sensor: "line1", Temp: 21.5, Tags: []string{"plant"}})
	codec.MsgpackToJSON(os.Stdout, buf[:n])
	fmt.Println()
	// Output: {"sensor":"line1","temp":21.5,"tags":["plant"]}
}
