package shm

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// unitConfig is a small configuration that keeps test regions to a few hundred KiB.
func unitConfig() Config {
	return Config{
		Classes:       []Class{{Size: 64, Count: 8}, {Size: 256, Count: 8}, {Size: 4096, Count: 4}},
		Inboxes:       4,
		InboxCapacity: 16,
		Topics:        4,
		Participants:  4,
		HistoryDepth:  2,
		Held:          16,
	}
}

// pinRegion keeps r mapped for the rest of the process (a participant stays attached, so
// Close refuses to unmap). A test that gives up on a goroutine stuck in a loop over the
// region's memory calls it, so that the goroutine cannot fault on an unmapped page.
func pinRegion(r *Region) { r.Attach("pinned by a failed test") }

// within runs fn in a goroutine and fails the test if it does not return within d.
func within(t testing.TB, r *Region, d time.Duration, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(d):
		pinRegion(r)
		t.Fatalf("%s did not return within %v", what, d)
	}
}

// newUnitRegion creates region "unit" with cfg in a fresh temporary directory and closes it
// at the end of the test (after the participants attached with attachUnit have detached).
func newUnitRegion(t testing.TB, cfg Config) *Region {
	t.Helper()
	r, err := Create("unit", Options{Dir: t.TempDir(), Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("closing the region: %v", err)
		}
	})
	return r
}

// attachUnit attaches a participant that detaches at the end of the test.
func attachUnit(t testing.TB, r *Region, name string) *Participant {
	t.Helper()
	p, err := r.Attach(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Detach() })
	return p
}

// createClosed creates region name in dir, closes it and returns the path of its file.
func createClosed(t *testing.T, dir, name string, cfg Config) string {
	t.Helper()
	r, err := Create(name, Options{Dir: dir, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	return Path(dir, name)
}

// writeAt overwrites bytes of a region file.
func writeAt(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func le32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }
func le64(v uint64) []byte { return binary.NativeEndian.AppendUint64(nil, v) }

// fixChecksum recomputes the header checksum of a region file after a test changed bytes it
// covers, so that validation gets past the checksum to the check under test.
func fixChecksum(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	writeAt(t, path, 32, le64(headerChecksum(b)))
}

func TestCreateOpenUnlink(t *testing.T) {
	dir := t.TempDir()
	cfg := unitConfig()
	r, err := Create("bus-1", Options{Dir: dir, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if r.Name() != "bus-1" || r.Path() != filepath.Join(dir, "bus-1") || !r.Config().Equal(cfg) {
		t.Fatalf("Name %q Path %q Config %+v", r.Name(), r.Path(), r.Config())
	}
	if r.Size() != int(computeLayout(cfg).total) {
		t.Fatalf("Size %d, layout %d", r.Size(), computeLayout(cfg).total)
	}
	st, err := os.Stat(r.Path())
	if err != nil || st.Size() != int64(r.Size()) {
		t.Fatalf("file %v, %v", st, err)
	}
	// Config returns a copy.
	r.Config().Classes[0].Count = 99
	if r.Config().Classes[0].Count == 99 {
		t.Fatal("Config() shares its Classes with the region")
	}

	// Open without a Config takes whatever the region has; with the same Config it succeeds.
	r2, err := Open("bus-1", Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if !r2.Config().Equal(cfg) {
		t.Fatalf("Open read config %+v, want %+v", r2.Config(), cfg)
	}
	r3, err := Open("bus-1", Options{Dir: dir, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}

	// Both mappings see the same memory.
	p, err := r.Attach("writer")
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.alloc(5)
	if err != nil {
		t.Fatal(err)
	}
	copy(b.Bytes(), "hello")
	b.SetMeta(Meta{Len: 5, Seq: 7})
	b3, err := r3.buffer(b.Handle())
	if err != nil || string(b3.Data()) != "hello" || b3.Meta().Seq != 7 {
		t.Fatalf("other mapping: %v %q", err, b3.Data())
	}
	if err := p.unloan(b.Handle()); err != nil {
		t.Fatal(err)
	}

	// Unlink removes the name; existing mappings keep working.
	if err := Unlink(dir, "bus-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "bus-1")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("file still there after Unlink: %v", err)
	}
	if _, err := Open("bus-1", Options{Dir: dir}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open after Unlink: %v", err)
	}
	if err := Unlink(dir, "bus-1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Unlink: %v", err)
	}
	if err := Unlink(dir, "../x"); err == nil {
		t.Fatal("Unlink accepted an invalid name")
	}
	if b, err = p.alloc(5); err != nil {
		t.Fatalf("Alloc on an unlinked region: %v", err)
	}
	if err := p.unloan(b.Handle()); err != nil {
		t.Fatal(err)
	}
	if err := p.Detach(); err != nil {
		t.Fatal(err)
	}
	for _, rr := range []*Region{r, r2, r3} {
		if err := rr.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("files left behind: %v", ents)
	}
}

func TestCreateDefaults(t *testing.T) {
	dir := t.TempDir()
	r, err := Create("d", Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if !r.Config().Equal(DefaultConfig()) {
		t.Fatalf("zero Options created %+v, want DefaultConfig", r.Config())
	}
	if Path("", "x") != filepath.Join(DefaultDir, "x") {
		t.Fatalf("Path(\"\", x) = %q", Path("", "x"))
	}
}

func TestCreateErrors(t *testing.T) {
	dir := t.TempDir()
	bad := unitConfig()
	bad.InboxCapacity = 3
	if _, err := Create("x", Options{Dir: dir, Config: bad}); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "inbox_capacity") {
		t.Fatalf("Create with an invalid config: %v", err)
	}
	if _, err := Create(".hidden", Options{Dir: dir}); err == nil {
		t.Fatal("Create accepted a name starting with '.'")
	}
	if _, err := Create("x", Options{Dir: filepath.Join(dir, "missing")}); err == nil || errors.Is(err, ErrExists) {
		t.Fatalf("Create in a missing directory: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("failed creates left files: %v", ents)
	}
}

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"a", "bus", "Bus-1_x.y", strings.Repeat("n", 200), "a..b", "1"} {
		if err := ValidateName(ok); err != nil {
			t.Errorf("ValidateName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", ".a", "a/b", "/a", "a b", "a\x00", "ä", strings.Repeat("n", 201), "a\n"} {
		if err := ValidateName(bad); err == nil {
			t.Errorf("ValidateName(%q) accepted", bad)
		}
		if _, err := Open(bad, Options{Dir: t.TempDir()}); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("Open(%q) = %v, want a name error", bad, err)
		}
	}
}

func TestCreateTwiceExists(t *testing.T) {
	dir := t.TempDir()
	r, err := Create("twice", Options{Dir: dir, Config: unitConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, err = Create("twice", Options{Dir: dir, Config: unitConfig()})
	if !errors.Is(err, ErrExists) {
		t.Fatalf("second Create: %v, want ErrExists", err)
	}
	if !strings.Contains(err.Error(), `"twice"`) {
		t.Fatalf("error %q does not name the region", err)
	}
	// A different config does not matter: the name exists.
	if _, err := Create("twice", Options{Dir: dir}); !errors.Is(err, ErrExists) {
		t.Fatalf("Create with another config: %v, want ErrExists", err)
	}
	// The loser leaves no temporary file behind.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != "twice" {
		t.Fatalf("directory holds %v", ents)
	}
}

func TestOpenNotFound(t *testing.T) {
	_, err := Open("nobody", Options{Dir: t.TempDir()})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `"nobody"`) {
		t.Fatalf("Open of a missing region: %v", err)
	}
}

func TestOpenIncompatibleConfig(t *testing.T) {
	dir := t.TempDir()
	createClosed(t, dir, "cfg", unitConfig())
	for _, tc := range []struct {
		modify func(*Config)
		field  string
	}{
		{func(c *Config) { c.Inboxes = 5 }, "inboxes: region has 4, asked for 5"},
		{func(c *Config) { c.InboxCapacity = 32 }, "inbox_capacity"},
		{func(c *Config) { c.Topics = 5 }, "topics"},
		{func(c *Config) { c.Participants = 5 }, "participants"},
		{func(c *Config) { c.HistoryDepth = 3 }, "history_depth"},
		{func(c *Config) { c.Held = 3 }, "held"},
		{func(c *Config) { c.Classes[1].Count = 9 }, "class 1"},
		{func(c *Config) { c.Classes = c.Classes[:1] }, "size classes"},
	} {
		want := unitConfig()
		tc.modify(&want)
		r, err := Open("cfg", Options{Dir: dir, Config: want})
		if !errors.Is(err, ErrIncompatibleConfig) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("Open with %+v: %v, want ErrIncompatibleConfig naming %q", want, err, tc.field)
		}
		if r != nil {
			t.Errorf("Open returned a region with its error")
		}
		if _, _, err := OpenOrCreate("cfg", Options{Dir: dir, Config: want}); !errors.Is(err, ErrIncompatibleConfig) {
			t.Errorf("OpenOrCreate with %+v: %v, want ErrIncompatibleConfig", want, err)
		}
	}
}

func TestOpenForeignFile(t *testing.T) {
	dir := t.TempDir()
	random := make([]byte, 64<<10)
	rand.Read(random)
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"tiny", []byte("hello")},
		{"header-sized zeros", make([]byte, headerSize)},
		{"random", random},
		{"text", []byte(strings.Repeat("not a region\n", 1000))},
	} {
		if err := os.WriteFile(filepath.Join(dir, "f"), tc.data, 0o600); err != nil {
			t.Fatal(err)
		}
		r, err := Open("f", Options{Dir: dir, ReadyTimeout: time.Millisecond})
		if !errors.Is(err, ErrCorrupt) || r != nil {
			t.Errorf("%s file: Open = %v, want ErrCorrupt", tc.name, err)
		}
	}
	// OpenOrCreate does not replace a foreign file.
	if _, _, err := OpenOrCreate("f", Options{Dir: dir}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("OpenOrCreate over a foreign file: %v, want ErrCorrupt", err)
	}
}

func TestOpenCorruptHeader(t *testing.T) {
	cfg := unitConfig()
	lay := computeLayout(cfg)
	for _, tc := range []struct {
		name    string
		mutate  func(t *testing.T, path string)
		want    error
		message string
	}{
		{"bad magic", func(t *testing.T, p string) { writeAt(t, p, 0, []byte("OFFQREG2")) }, ErrCorrupt, "magic"},
		{"byte order", func(t *testing.T, p string) { writeAt(t, p, 12, le32(0x0d0c0b0a)) }, ErrCorrupt, "byte-order"},
		{"version", func(t *testing.T, p string) { writeAt(t, p, 8, le32(layoutVersion+1)) }, ErrVersion, fmt.Sprintf("version %d", layoutVersion+1)},
		{"version zero", func(t *testing.T, p string) { writeAt(t, p, 8, le32(0)) }, ErrVersion, "version 0"},
		{"state word", func(t *testing.T, p string) { writeAt(t, p, 16, le32(7)) }, ErrCorrupt, "state word 7"},
		{"header size", func(t *testing.T, p string) { writeAt(t, p, 20, le32(512)) }, ErrCorrupt, "header size"},
		{"checksum", func(t *testing.T, p string) { writeAt(t, p, 32, le64(12345)) }, ErrCorrupt, "checksum"},
		{"config byte", func(t *testing.T, p string) { writeAt(t, p, 64+4, le32(5)) }, ErrCorrupt, "checksum"},
		{"section table byte", func(t *testing.T, p string) { writeAt(t, p, 170, []byte{1}) }, ErrCorrupt, "checksum"},
		{"padding inside the checksum", func(t *testing.T, p string) { writeAt(t, p, 500, []byte{1}) }, ErrCorrupt, "checksum"},
		{"invalid stored config", func(t *testing.T, p string) {
			writeAt(t, p, 64+8, le32(3)) // inbox capacity 3
			fixChecksum(t, p)
		}, ErrCorrupt, "stored configuration"},
		{"too many classes", func(t *testing.T, p string) {
			writeAt(t, p, 64, le32(MaxClasses+1))
			fixChecksum(t, p)
		}, ErrCorrupt, "stored configuration"},
		{"section table mismatch", func(t *testing.T, p string) {
			writeAt(t, p, 160, le64(lay.sec.participants.off+64))
			fixChecksum(t, p)
		}, ErrCorrupt, "section table"},
		{"pool section mismatch", func(t *testing.T, p string) {
			writeAt(t, p, 160+6*16+2*16+8, le64(lay.sec.pools[2].size+64))
			fixChecksum(t, p)
		}, ErrCorrupt, "section table"},
		{"config with a matching but different section table", func(t *testing.T, p string) {
			// A consistent header for a larger config: the sizes no longer match the file.
			c := cfg
			c.Inboxes++
			var h header
			h.setConfig(c)
			h.sec = computeLayout(c).sec
			b, _ := os.ReadFile(p)
			copy(b[64:], (*[96]byte)(unsafe.Pointer(&h.cfg))[:])
			copy(b[160:], unsafe.Slice((*byte)(unsafe.Pointer(&h.sec)), unsafe.Sizeof(h.sec)))
			binary.NativeEndian.PutUint64(b[32:], headerChecksum(b))
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}, ErrCorrupt, "configuration implies"},
		{"total size field", func(t *testing.T, p string) { writeAt(t, p, 24, le64(lay.total+64)) }, ErrCorrupt, "header says"},
		{"truncated", func(t *testing.T, p string) {
			if err := os.Truncate(p, int64(lay.total)-64); err != nil {
				t.Fatal(err)
			}
		}, ErrCorrupt, "bytes"},
		{"truncated below a header", func(t *testing.T, p string) {
			if err := os.Truncate(p, headerSize-1); err != nil {
				t.Fatal(err)
			}
		}, ErrCorrupt, "smaller than a header"},
		{"extended", func(t *testing.T, p string) {
			if err := os.Truncate(p, int64(lay.total)+4096); err != nil {
				t.Fatal(err)
			}
		}, ErrCorrupt, "bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := createClosed(t, dir, "c", cfg)
			tc.mutate(t, path)
			r, err := Open("c", Options{Dir: dir, ReadyTimeout: time.Millisecond})
			if !errors.Is(err, tc.want) || r != nil {
				t.Fatalf("Open = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("Open error %q does not mention %q", err, tc.message)
			}
			if tc.want == ErrVersion && errors.Is(err, ErrCorrupt) {
				t.Fatalf("a version mismatch is reported as corruption: %v", err)
			}
		})
	}
}

func TestOpenNotReady(t *testing.T) {
	dir := t.TempDir()
	path := createClosed(t, dir, "slow", unitConfig())
	writeAt(t, path, 16, le32(stateInit))
	start := time.Now()
	r, err := Open("slow", Options{Dir: dir, ReadyTimeout: 30 * time.Millisecond})
	if !errors.Is(err, ErrNotReady) || r != nil {
		t.Fatalf("Open of a region stuck initialising: %v, want ErrNotReady", err)
	}
	if d := time.Since(start); d < 30*time.Millisecond || d > 10*time.Second {
		t.Fatalf("Open gave up after %v; ReadyTimeout is 30ms", d)
	}
}

func TestOpenWaitsForReady(t *testing.T) {
	dir := t.TempDir()
	path := createClosed(t, dir, "late", unitConfig())
	writeAt(t, path, 16, le32(stateInit))
	done := make(chan error, 1)
	go func() {
		r, err := Open("late", Options{Dir: dir, ReadyTimeout: 20 * time.Second})
		if err == nil {
			err = r.Close()
		}
		done <- err
	}()
	// Whether Open has started waiting or not, it must see the state change.
	writeAt(t, path, 16, le32(stateReady))
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Open did not notice the region becoming ready")
	}
}

func TestOpenRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	createClosed(t, dir, "real", unitConfig())
	if err := os.Symlink(filepath.Join(dir, "real"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if _, err := Open("link", Options{Dir: dir}); !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("Open through a symlink: %v, want ErrPermission", err)
	}
	if _, _, err := OpenOrCreate("link", Options{Dir: dir}); !errors.Is(err, ErrPermission) {
		t.Fatalf("OpenOrCreate through a symlink: %v, want ErrPermission", err)
	}
	// A dangling symlink is refused too, and Create does not write through it.
	target := filepath.Join(dir, "target")
	if err := os.Symlink(target, filepath.Join(dir, "dangling")); err != nil {
		t.Fatal(err)
	}
	if _, err := Open("dangling", Options{Dir: dir}); !errors.Is(err, ErrPermission) {
		t.Fatalf("Open through a dangling symlink: %v, want ErrPermission", err)
	}
	if _, err := Create("dangling", Options{Dir: dir, Config: unitConfig()}); !errors.Is(err, ErrExists) {
		t.Fatalf("Create over a dangling symlink: %v, want ErrExists", err)
	}
	if _, err := os.Lstat(target); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Create wrote through a symlink: %v", err)
	}
}

func TestOpenRefusesNonRegular(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o700); err != nil {
		t.Fatal(err)
	}
	if r, err := Open("d", Options{Dir: dir}); err == nil || r != nil {
		t.Fatalf("Open of a directory: %v", err)
	}
	if _, err := Create("d", Options{Dir: dir, Config: unitConfig()}); !errors.Is(err, ErrExists) {
		t.Fatalf("Create over a directory: %v, want ErrExists", err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	if _, err := Open("fifo", Options{Dir: dir}); !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("Open of a FIFO: %v, want ErrPermission", err)
	}
}

func TestOpenForeignOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file to another user")
	}
	dir := t.TempDir()
	path := createClosed(t, dir, "theirs", unitConfig())
	if err := os.Chown(path, 12345, 12345); err != nil {
		t.Fatal(err)
	}
	if _, err := Open("theirs", Options{Dir: dir}); !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "12345") {
		t.Fatalf("Open of another user's region: %v, want ErrPermission", err)
	}
	r, err := Open("theirs", Options{Dir: dir, AllowForeignOwner: true})
	if err != nil {
		t.Fatalf("Open with AllowForeignOwner: %v", err)
	}
	r.Close()
}

func TestCreateMode(t *testing.T) {
	// Not parallel: the umask belongs to the whole process.
	for _, umask := range []int{0o022, 0o077} {
		old := syscall.Umask(umask)
		for _, tc := range []struct {
			mode os.FileMode
			want os.FileMode
		}{
			{0, 0o600},
			{0o660, 0o660},
			{0o640, 0o640},
			{0o666, 0o666},
			{0o600 | os.ModeDir, 0o600}, // only permission bits count
		} {
			dir := t.TempDir()
			r, err := Create("m", Options{Dir: dir, Mode: tc.mode, Config: unitConfig()})
			if err != nil {
				syscall.Umask(old)
				t.Fatal(err)
			}
			r.Close()
			st, err := os.Lstat(filepath.Join(dir, "m"))
			if err != nil {
				syscall.Umask(old)
				t.Fatal(err)
			}
			if st.Mode() != tc.want {
				t.Errorf("umask %#o, Mode %v: file mode %v, want %v", umask, tc.mode, st.Mode(), tc.want)
			}
		}
		syscall.Umask(old)
	}
}

func TestCreateRemovesStaleInit(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, ".bus.init-0123456789abcdef")
	if err := os.WriteFile(stale, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	// A temporary file whose creator is alive (it holds the lock on byte 0) must stay.
	live := filepath.Join(dir, ".bus.init-fedcba9876543210")
	if err := os.WriteFile(live, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	lf, err := openFile(live, syscall.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	if got, err := ofdLock(lf, 0); !got || err != nil {
		t.Fatalf("lock: %v %v", got, err)
	}
	// Another region's temporary file is none of this Create's business.
	other := filepath.Join(dir, ".other.init-0123456789abcdef")
	if err := os.WriteFile(other, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	r, err := Create("bus", Options{Dir: dir, Config: unitConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := os.Lstat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale temporary file survived Create: %v", err)
	}
	for _, keep := range []string{live, other} {
		if _, err := os.Lstat(keep); err != nil {
			t.Errorf("%s was removed: %v", filepath.Base(keep), err)
		}
	}
}

// TestCreateMidInitialisation stops a creator between writing the region and marking it
// ready, and checks what the rest of the world sees meanwhile.
func TestCreateMidInitialisation(t *testing.T) {
	dir := t.TempDir()
	var tmpSeen string
	inner := false
	testHookInit = func(tmp string) {
		if inner {
			return
		}
		inner = true
		tmpSeen = tmp
		if !strings.HasPrefix(filepath.Base(tmp), ".mid.init-") || filepath.Dir(tmp) != dir {
			t.Errorf("temporary file %q", tmp)
		}
		// The creator holds the lock on byte 0, so a cleaner leaves the file alone.
		f, err := openFile(tmp, syscall.O_RDWR, 0)
		if err != nil {
			t.Errorf("open temporary file: %v", err)
		} else {
			if locked, err := ofdLocked(f, 0); !locked || err != nil {
				t.Errorf("temporary file not locked during initialisation: %v %v", locked, err)
			}
			f.Close()
		}
		removeStaleInits(dir, "mid")
		if _, err := os.Lstat(tmp); err != nil {
			t.Errorf("a live creator's temporary file was removed: %v", err)
		}
		// Nobody can open the half-written region under its name.
		if _, err := Open("mid", Options{Dir: dir}); !errors.Is(err, ErrNotFound) {
			t.Errorf("Open during initialisation: %v, want ErrNotFound", err)
		}
		// Another creator wins the race meanwhile.
		r2, err := Create("mid", Options{Dir: dir, Config: unitConfig()})
		if err != nil {
			t.Errorf("racing Create: %v", err)
			return
		}
		r2.Close()
	}
	t.Cleanup(func() { testHookInit = func(string) {} })

	_, err := Create("mid", Options{Dir: dir, Config: unitConfig()})
	if !errors.Is(err, ErrExists) {
		t.Fatalf("the creator that lost the race got %v, want ErrExists", err)
	}
	if tmpSeen == "" {
		t.Fatal("testHookInit was not called")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != "mid" {
		t.Fatalf("directory holds %v, want only the region", ents)
	}
	r, err := Open("mid", Options{Dir: dir, Config: unitConfig()})
	if err != nil {
		t.Fatalf("Open of the winner's region: %v", err)
	}
	r.Close()
}

func TestOpenOrCreate(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Dir: dir, Config: unitConfig()}
	r1, created, err := OpenOrCreate("ooc", opts)
	if err != nil || !created {
		t.Fatalf("first OpenOrCreate: created=%v %v", created, err)
	}
	defer r1.Close()
	r2, created, err := OpenOrCreate("ooc", opts)
	if err != nil || created {
		t.Fatalf("second OpenOrCreate: created=%v %v", created, err)
	}
	defer r2.Close()
	// Without a Config an existing region is taken as it is.
	r3, created, err := OpenOrCreate("ooc", Options{Dir: dir})
	if err != nil || created || !r3.Config().Equal(unitConfig()) {
		t.Fatalf("OpenOrCreate without a config: created=%v %v %+v", created, err, r3.Config())
	}
	defer r3.Close()
}

// TestOpenOrCreateConcurrent: of several goroutines racing to open or create one region,
// exactly one creates it and all succeed. (Each Create's removeStaleInits may find another
// Create's temporary file in the instant before it is locked; that Create must start again,
// not fail with ENOENT.)
func TestOpenOrCreateConcurrent(t *testing.T) {
	for round := range 20 {
		dir := t.TempDir()
		const n = 8
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			creates int
			regions []*Region
		)
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, created, err := OpenOrCreate("race", Options{Dir: dir, Config: unitConfig()})
				if err != nil {
					t.Errorf("round %d: OpenOrCreate: %v", round, err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if created {
					creates++
				}
				regions = append(regions, r)
			}()
		}
		wg.Wait()
		if creates != 1 {
			t.Errorf("round %d: %d creators, want exactly 1", round, creates)
		}
		// All of them map the same region: a buffer allocated through one is seen by all.
		if len(regions) > 0 {
			p, err := regions[0].Attach("w")
			if err != nil {
				t.Fatal(err)
			}
			b, err := p.alloc(1)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range regions {
				if _, err := r.buffer(b.Handle()); err != nil {
					t.Errorf("round %d: region does not see the buffer: %v", round, err)
				}
			}
			p.unloan(b.Handle())
			p.Detach()
		}
		for _, r := range regions {
			r.Close()
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 1 {
			t.Errorf("round %d: directory holds %v", round, ents)
		}
	}
}

func TestCloseIdempotentAndRefusedWhileAttached(t *testing.T) {
	dir := t.TempDir()
	r, err := Create("close", Options{Dir: dir, Config: unitConfig()})
	if err != nil {
		t.Fatal(err)
	}
	p, err := r.Attach("p")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err == nil || !strings.Contains(err.Error(), "attached") {
		t.Fatalf("Close with a participant attached: %v", err)
	}
	// The region is still usable after the refused Close.
	b, err := p.alloc(1)
	if err != nil {
		t.Fatal(err)
	}
	p.unloan(b.Handle())
	if err := p.Detach(); err != nil {
		t.Fatal(err)
	}
	if err := p.Detach(); err != nil {
		t.Fatalf("second Detach: %v", err)
	}
	for i := range 3 {
		if err := r.Close(); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
	if _, err := r.Attach("late"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Attach after Close: %v, want ErrClosed", err)
	}
}

func TestAttachDetach(t *testing.T) {
	cfg := unitConfig()
	r := newUnitRegion(t, cfg)
	other, err := Open("unit", Options{Dir: filepath.Dir(r.Path())})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	var ps []*Participant
	for i := range int(cfg.Participants) {
		p, err := r.Attach("p" + string(rune('0'+i)))
		if err != nil {
			t.Fatalf("Attach #%d: %v", i, err)
		}
		if p.Index() != i || p.region() != r {
			t.Fatalf("Attach #%d got slot %d", i, p.Index())
		}
		ps = append(ps, p)
	}
	if _, err := r.Attach("one too many"); !errors.Is(err, ErrTableFull) {
		t.Fatalf("Attach to a full table: %v, want ErrTableFull", err)
	}
	if _, err := other.Attach("from elsewhere"); !errors.Is(err, ErrTableFull) {
		t.Fatalf("Attach through another mapping to a full table: %v, want ErrTableFull", err)
	}
	for i := range ps {
		for _, rr := range []*Region{r, other} {
			if alive, err := rr.Alive(i); !alive || err != nil {
				t.Fatalf("Alive(%d) = %v, %v for an attached participant", i, alive, err)
			}
		}
	}
	infos := r.Participants()
	if len(infos) != len(ps) {
		t.Fatalf("Participants() = %+v", infos)
	}
	for i, info := range infos {
		if info.Index != i || info.Name != "p"+string(rune('0'+i)) || info.PID != os.Getpid() || !info.Alive ||
			time.Since(info.Attached) > time.Minute || time.Since(info.Attached) < 0 {
			t.Errorf("Participants()[%d] = %+v", i, info)
		}
	}

	// Detach frees the slot; the next Attach (from any mapping) takes it.
	if err := ps[2].Detach(); err != nil {
		t.Fatal(err)
	}
	if alive, err := r.Alive(2); alive || err != nil {
		t.Fatalf("Alive(2) after Detach = %v, %v", alive, err)
	}
	for _, info := range r.Participants() {
		if info.Index == 2 {
			t.Fatalf("a detached participant is listed: %+v", info)
		}
	}
	q, err := other.Attach("a-long-name-that-is-longer-than-thirty-two-bytes")
	if err != nil {
		t.Fatal(err)
	}
	if q.Index() != 2 {
		t.Fatalf("Attach took slot %d, want the freed slot 2", q.Index())
	}
	if got := r.Participants()[2].Name; got != "a-long-name-that-is-longer-than-" {
		t.Fatalf("name recorded as %q", got)
	}
	ps[2] = q
	for _, i := range []int{-1, int(cfg.Participants)} {
		if _, err := r.Alive(i); err == nil {
			t.Errorf("Alive(%d) accepted", i)
		}
	}
	for _, p := range ps {
		if err := p.Detach(); err != nil {
			t.Fatal(err)
		}
	}
	if got := r.Participants(); len(got) != 0 {
		t.Fatalf("Participants() after every Detach = %+v", got)
	}
}

// TestAttachReapsDeadSlot: a slot marked attached whose lock nobody holds belongs to a process
// that died. Attach, holding the slot's lock, reclaims what the dead participant left and
// takes the slot; the reclaim is counted.
func TestAttachReapsDeadSlot(t *testing.T) {
	cfg := unitConfig()
	cfg.Participants = 2
	r := newUnitRegion(t, cfg)
	(*participantSlot)(r.at(r.participantOffset(0))).state.Store(5<<8 | partAttached)
	infos := r.Participants()
	if len(infos) != 1 || infos[0].Index != 0 || infos[0].Alive {
		t.Fatalf("Participants() = %+v, want slot 0 listed as dead", infos)
	}
	p := attachUnit(t, r, "p")
	if p.Index() != 0 {
		t.Fatalf("Attach took slot %d, want the dead participant's slot 0", p.Index())
	}
	if got := r.hdr.reclaims.Load(); got != 1 {
		t.Fatalf("reclaims %d, want 1", got)
	}
	q := attachUnit(t, r, "q")
	if q.Index() != 1 {
		t.Fatalf("second Attach took slot %d, want 1", q.Index())
	}
	if _, err := r.Attach("x"); !errors.Is(err, ErrTableFull) {
		t.Fatalf("Attach: %v, want ErrTableFull", err)
	}
}
