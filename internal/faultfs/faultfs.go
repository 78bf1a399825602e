// Package faultfs makes region files whose memory faults, for tests of what offq does when
// touching a mapped region raises SIGBUS: a file cut short by another process (Truncate), and
// a file whose pages have no memory behind them on a full tmpfs (Tmpfs, CopyRegion, Fill),
// where reading or writing a hole in a shared mapping faults.
//
// A process that faults dies, so such tests run the attack in a child process (package peer)
// and check that it exits on its own with an error, not by a signal.
package faultfs

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Block is the unit CopyRegion copies or leaves out: a page.
const Block = 4096

// Tmpfs mounts a tmpfs of size bytes on a new temporary directory, unmounted when the test
// ends, and returns the directory. It skips the test, saying why, where mounting is not
// possible (not root, or no mount namespace privilege).
func Tmpfs(tb testing.TB, size int) string {
	tb.Helper()
	dir := tb.TempDir()
	if os.Geteuid() != 0 {
		tb.Skip("faultfs: mounting a small tmpfs needs root (CI runs as root)")
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+itoa(size)); err != nil {
		tb.Skipf("faultfs: cannot mount a tmpfs on %s: %v", dir, err)
	}
	tb.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			tb.Errorf("faultfs: unmount %s: %v", dir, err)
		}
	})
	return dir
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		if n /= 10; n == 0 {
			return string(b[i:])
		}
	}
}

// CopyRegion copies file src to dst block by block, leaving a hole (no page behind it) for
// each block that hole reports true for, given its offset and contents. The copy has src's
// size and mode.
func CopyRegion(tb testing.TB, src, dst string, hole func(off int64, block []byte) bool) {
	tb.Helper()
	in, err := os.Open(src)
	if err != nil {
		tb.Fatal(err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
	if err != nil {
		tb.Fatal(err)
	}
	defer out.Close()
	if err := out.Truncate(fi.Size()); err != nil {
		tb.Fatalf("faultfs: size the copy: %v", err)
	}
	buf := make([]byte, Block)
	for off := int64(0); off < fi.Size(); off += Block {
		n, err := in.ReadAt(buf, off)
		if err != nil && !errors.Is(err, io.EOF) {
			tb.Fatal(err)
		}
		if hole(off, buf[:n]) {
			continue
		}
		if _, err := out.WriteAt(buf[:n], off); err != nil {
			tb.Fatalf("faultfs: copy block at %d: %v (tmpfs too small?)", off, err)
		}
	}
}

// Zero is a hole function for CopyRegion: it leaves out every block of zeros, as a sparse copy
// does. A fresh region is mostly zeros (free tables), so only its header and the pools'
// headers keep pages.
func Zero(_ int64, block []byte) bool {
	for _, c := range block {
		if c != 0 {
			return false
		}
	}
	return true
}

// Fill fills the file system holding dir until it has no room left, so that touching a hole
// of a file on it faults. The filler file goes with the tmpfs.
func Fill(tb testing.TB, dir string) {
	tb.Helper()
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, Block)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			tb.Fatalf("faultfs: fill %s: %v", dir, err)
		}
	}
}

// Truncate cuts the file at path to size bytes, as another process might: the pages past
// size leave every mapping of the file, and touching them faults.
func Truncate(tb testing.TB, path string, size int64) {
	tb.Helper()
	if err := os.Truncate(path, size); err != nil {
		tb.Fatal(err)
	}
}
