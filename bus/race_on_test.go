//go:build race

package bus

// raceEnabled: the race detector is on (tests that only need many iterations skip).
const raceEnabled = true
