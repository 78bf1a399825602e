package shm

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

// TestOpenFIFOReadOnlyDoesNotBlock: a read-only open of a FIFO named like a region (which
// blocks until a writer comes, without O_NONBLOCK) fails at once.
func TestOpenFIFOReadOnlyDoesNotBlock(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := Open("fifo", Options{Dir: dir, ReadOnly: true, AllowForeignOwner: true})
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrPermission) {
			t.Fatalf("read-only Open of a FIFO: %v, want ErrPermission", err)
		}
	case <-time.After(10 * time.Second):
		// Unblock the open so that the goroutine ends, then fail.
		if f, err := os.OpenFile(filepath.Join(dir, "fifo"), os.O_WRONLY, 0); err == nil {
			f.Close()
		}
		t.Fatal("read-only Open of a FIFO blocked")
	}
}

// TestListDamagedMagic: List names a region whose magic was overwritten (Open refuses it as
// corrupt), and leaves out FIFOs and files that are no region.
func TestListDamagedMagic(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"good", "damaged"} {
		r, err := Create(n, Options{Dir: dir, Config: unitConfig()})
		if err != nil {
			t.Fatal(err)
		}
		r.Close()
	}
	f, err := os.OpenFile(filepath.Join(dir, "damaged"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 8), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.WriteFile(filepath.Join(dir, "junk"), make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := List(dir)
	if err != nil || !slices.Equal(got, []string{"damaged", "good"}) {
		t.Fatalf("List = %q, %v; want [damaged good]", got, err)
	}
	if _, err := Open("damaged", Options{Dir: dir, ReadOnly: true}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open of the damaged region: %v, want ErrCorrupt", err)
	}
}
