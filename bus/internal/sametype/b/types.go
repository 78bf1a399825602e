// Package b holds types that package a copies byte for byte, for the tests of
// type identity across packages (a copy of a struct in another module is the same message).
package b

// Reading is a pointer-free struct, for codec.Struct.
type Reading struct {
	Seq     uint64
	Celsius float64
	Sensor  [8]byte
}

// Event is a struct for codec.Msgpack.
type Event struct {
	Sensor string   `msgpack:"sensor"`
	Temp   float64  `msgpack:"temp"`
	Tags   []string `msgpack:"tags"`
}
