package main

// must returns v, and panics if err is set: for tests reading a snapshot of a region that is
// known to be whole.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
