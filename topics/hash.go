package topics

const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// Hash returns the 64-bit FNV-1a hash of name, the same value as hash/fnv's
// New64a would compute. It is stable across processes and releases, so it
// can key a table in shared memory. Hash does not allocate and is safe for
// concurrent use.
func Hash(name string) uint64 {
	h := uint64(fnvOffset64)
	for i := 0; i < len(name); i++ {
		h ^= uint64(name[i])
		h *= fnvPrime64
	}
	return h
}
