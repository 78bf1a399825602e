package shm

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DefaultDir is where regions live unless Options.Dir says otherwise.
const DefaultDir = "/dev/shm"

// Options tell Create, Open and OpenOrCreate where a region is and what it must look like.
// The zero value is usable: /dev/shm, mode 0600, DefaultConfig for a new region and whatever
// configuration an existing region has.
type Options struct {
	// Dir is the directory holding region files. Default DefaultDir.
	Dir string
	// Mode is the permission of a new region file. Default 0600; 0660 shares a bus with the
	// file's group. It is applied exactly (the umask does not narrow it).
	Mode os.FileMode
	// Config sizes a new region. When set (non-nil Classes), Open and OpenOrCreate also
	// require an existing region to have exactly this configuration.
	Config Config
	// ReadyTimeout bounds how long Open waits for a region that is still being initialised.
	// Default 2s.
	ReadyTimeout time.Duration
	// ReadOnly maps an existing region read-only, for tools and exporters that only read its
	// counters: Attach fails, and nothing the process does can change the region.
	ReadOnly bool
	// AllowForeignOwner lets Open attach to a region file owned by another user. By default
	// such a file is refused with ErrPermission: in a world-writable directory another user
	// could have planted it.
	AllowForeignOwner bool
}

func (o Options) dir() string {
	if o.Dir == "" {
		return DefaultDir
	}
	return o.Dir
}

func (o Options) mode() os.FileMode {
	if o.Mode == 0 {
		return 0o600
	}
	return o.Mode.Perm()
}

func (o Options) config() Config {
	if o.Config.Classes == nil {
		return DefaultConfig()
	}
	return o.Config
}

// ValidateName checks a region name: 1 to 200 bytes of letters, digits, '-', '_' and '.', not
// starting with '.' (names starting with '.' are reserved for regions being created).
func ValidateName(name string) error {
	if name == "" || len(name) > 200 || name[0] == '.' {
		return fmt.Errorf("invalid region name %q: want 1 to 200 of [A-Za-z0-9._-], not starting with '.'", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			// Say what is there as the user typed it: a character if it is one, a byte if
			// it is not UTF-8.
			if r, size := utf8.DecodeRuneInString(name[i:]); r != utf8.RuneError || size > 1 {
				return fmt.Errorf("invalid region name %q: %q at byte %d is not one of [A-Za-z0-9._-]", name, r, i)
			}
			return fmt.Errorf("invalid region name %q: byte %d (%#02x, not UTF-8) is not one of [A-Za-z0-9._-]", name, i, c)
		}
	}
	return nil
}

// Path returns the file that holds region name in dir ("" means DefaultDir).
func Path(dir, name string) string {
	if dir == "" {
		dir = DefaultDir
	}
	return filepath.Join(dir, name)
}

// Region is one process's mapping of a shared-memory region. A Region is safe for concurrent
// use by multiple goroutines. The mapping stays in place until Close, and Close refuses to
// unmap while participants of this process are still attached, so payload slices handed out
// stay valid for as long as their participant is.
type Region struct {
	name string
	path string
	f    *os.File
	mem  []byte
	base unsafe.Pointer
	hdr  *header
	cfg  Config
	lay  layout

	pools   []pool
	inboxes []inboxView
	maxSize uint32
	shard   uint32 // this process's counter shard in each pool
	// totalSlots is the number of slots of all pools: the positions a sweep pass covers.
	totalSlots uint64
	// classSizes is the size of each class, ascending; PoolErrors share it (read-only).
	classSizes []uint32
	readOnly   bool

	// sweepMu serialises this process's orphan sweeps; sweepPrev holds the candidates its
	// last sweep saw (Handle.slot to state word), which the next one confirms.
	sweepMu   sync.Mutex
	sweepPrev map[uint32]uint64
	// reclaimMu serialises this process's ReclaimTopics calls.
	reclaimMu sync.Mutex

	mu       sync.Mutex
	attached int      // participants of this process still attached
	owners   []uint32 // their indexes + 1, in the order they attached
	parts    []*Participant
	closed   atomic.Bool
	readers  atomic.Int64 // Stats-family calls under way; Close waits for them
}

// enterRead admits a call that reads the mapping without a participant (the Stats family);
// it reports false once Close has begun. Close waits for admitted calls to leave.
func (r *Region) enterRead() bool {
	r.readers.Add(1)
	if r.closed.Load() {
		r.readers.Add(-1)
		return false
	}
	return true
}

func (r *Region) exitRead() { r.readers.Add(-1) }

// Create makes a new region. It fails with ErrExists if one of that name exists.
//
// The region is built under a temporary name, reserved with fallocate, written, marked ready,
// and only then linked under its real name. Link fails if the name exists, so exactly one of
// several concurrent creators wins, and no process can ever attach to a half-written region:
// a creator that dies mid-way leaves only a locked temporary file, which the next Create or
// OpenOrCreate in that directory removes.
func Create(name string, opts Options) (*Region, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	cfg := opts.config()
	if err := cfg.Validate(); err != nil {
		return nil, &Error{Op: "create", Name: name, Err: err}
	}
	dir := opts.dir()
	removeStaleInits(dir, name)
	for range 8 {
		r, err := create(name, dir, cfg, opts.mode())
		if err != errTempVanished {
			return r, err
		}
		// A concurrent Create's cleanup took our temporary file for a dead creator's in the
		// instant between its creation and its lock: start again.
	}
	return nil, &Error{Op: "create", Name: name, Err: errors.New("temporary file keeps vanishing")}
}

// errTempVanished reports that a concurrent cleaner removed the temporary file.
var errTempVanished = errors.New("temporary file vanished")

func create(name, dir string, cfg Config, mode os.FileMode) (*Region, error) {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(dir, "."+name+".init-"+hex.EncodeToString(rnd[:]))
	f, err := openFile(tmp, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, mode)
	if err != nil {
		return nil, &Error{Op: "create", Name: name, Err: err}
	}
	ok := false
	defer func() {
		if !ok {
			os.Remove(tmp)
			f.Close()
		}
	}()
	// Byte 0 locked = "being initialised by a live process"; see removeStaleInits. Until the
	// lock is taken the file looks stale, and a concurrent Create may remove it: then the lock
	// fails (the cleaner holds it) or the link below finds no file, and we start again.
	got, err := ofdLock(f, 0)
	if err != nil {
		return nil, &Error{Op: "create", Name: name, Err: err}
	}
	if !got {
		ok = true // not ours to remove
		f.Close()
		return nil, errTempVanished
	}
	if err := fchmod(f, mode); err != nil {
		return nil, &Error{Op: "create", Name: name, Err: err}
	}
	lay := computeLayout(cfg)
	if err := reserve(f, int64(lay.total)); err != nil {
		return nil, &Error{Op: "create", Name: name, Err: err}
	}
	mem, err := mapFile(f, int(lay.total), false)
	if err != nil {
		return nil, &Error{Op: "create", Name: name, Err: err}
	}
	r := newRegion(name, Path(dir, name), f, mem, cfg, lay)
	if err := r.prepare(tmp); err != nil {
		unmap(mem)
		return nil, &Error{Op: "create", Name: name, Err: err}
	}

	if err := linkNoReplace(tmp, r.path); err != nil {
		unmap(mem)
		switch {
		case errors.Is(err, fs.ErrExist):
			return nil, &Error{Op: "create", Name: name, Err: ErrExists}
		case errors.Is(err, fs.ErrNotExist):
			return nil, errTempVanished
		}
		return nil, &Error{Op: "create", Name: name, Err: err}
	}
	os.Remove(tmp)
	ofdUnlock(f, 0)
	ok = true
	return r, nil
}

// testHookInit lets a test kill a creator in the middle of initialisation.
var testHookInit = func(tmpPath string) {}

// initialise writes a new region's header and tables. The file is fresh from fallocate, so
// everything not written here is zero, which is the "free" state of every table.
func (r *Region) initialise() {
	h := r.hdr
	h.magic = magic
	h.version = layoutVersion
	h.byteOrder = byteOrderMark
	h.headerSize = headerSize
	h.totalSize = r.lay.total
	h.created = time.Now().UnixNano()
	h.creatorPID = uint32(os.Getpid())
	h.setConfig(r.cfg)
	h.sec = r.lay.sec
	h.checksum = headerChecksum(r.mem)
	for i := range r.pools {
		p := &r.pools[i]
		ph := p.hdr
		ph.size, ph.count, ph.stride, ph.class, ph.slots = p.size, p.count, p.stride, uint32(i), p.slots
	}
}

// Open attaches to an existing region, validating everything it will rely on: magic, byte
// order, layout version, size, checksum, and that the section table is the one its config
// implies. If opts.Config is set, the region must have exactly that configuration.
func Open(name string, opts Options) (*Region, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	r, err := open(name, opts)
	if err != nil {
		return nil, &Error{Op: "open", Name: name, Err: err}
	}
	return r, nil
}

func open(name string, opts Options) (*Region, error) {
	path := Path(opts.dir(), name)
	flag := unix.O_RDWR
	if opts.ReadOnly {
		flag = unix.O_RDONLY
	}
	f, err := openFile(path, flag, 0)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, ErrNotFound
		case errors.Is(err, unix.EISDIR):
			return nil, fmt.Errorf("%w: %s is a directory", ErrPermission, path)
		}
		return nil, err
	}
	r, err := attach(name, path, f, opts)
	if err != nil {
		f.Close()
		return nil, err
	}
	return r, nil
}

func attach(name, path string, f *os.File, opts Options) (*Region, error) {
	uid, mode, size, err := fileOwner(f)
	if err != nil {
		return nil, err
	}
	if !isRegular(mode) {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrPermission, path)
	}
	if uid != uint32(os.Geteuid()) && !opts.AllowForeignOwner {
		return nil, fmt.Errorf("%w: %s is owned by uid %d, not %d (see Options.AllowForeignOwner)", ErrPermission, path, uid, os.Geteuid())
	}
	if size < headerSize {
		return nil, corruptf("file is %d bytes, smaller than a header", size)
	}
	if uint64(size) > MaxRegionSize {
		return nil, corruptf("file is %d bytes, larger than any region (%d)", size, uint64(MaxRegionSize))
	}
	if uint64(size) > maxMapped {
		// Not ErrCorrupt: the region may be sound, and an operator told so might remove it.
		return nil, fmt.Errorf("%w: the file is %d bytes, and a %d-bit process maps %d at most: use the bus from 64-bit processes", ErrIncompatibleConfig, size, strconv.IntSize, uint64(maxMapped))
	}
	mem, err := mapFile(f, int(size), opts.ReadOnly)
	if err != nil {
		return nil, err
	}
	cfg, lay, err := validateMapped(mem, opts.ReadyTimeout)
	if err != nil {
		unmap(mem)
		return nil, err
	}
	if opts.Config.Classes != nil {
		if d := opts.Config.diff(cfg); d != "" {
			unmap(mem)
			return nil, fmt.Errorf("%w: %s", ErrIncompatibleConfig, d)
		}
	}
	r := newRegion(name, path, f, mem, cfg, lay)
	r.readOnly = opts.ReadOnly
	return r, nil
}

// prepare initialises a new region and marks it ready, under the fault guard: on a file
// system without fallocate the pages are allocated as they are first written, and a full
// tmpfs then faults.
func (r *Region) prepare(tmp string) (err error) {
	defer unguard(guard(), &err)
	r.initialise()
	testHookInit(tmp)
	r.hdr.state.Store(stateReady)
	return nil
}

// validateMapped is validateHeader under the fault guard: the file may have been cut between
// the reading of its size and of its header.
func validateMapped(mem []byte, readyTimeout time.Duration) (_ Config, _ layout, err error) {
	defer unguard(guard(), &err)
	return validateHeader(mem, readyTimeout)
}

// validateHeader checks a mapped region and returns its configuration and layout. It reads
// only within mem and never trusts a number it has not checked.
func validateHeader(mem []byte, readyTimeout time.Duration) (Config, layout, error) {
	if len(mem) < headerSize {
		return Config{}, layout{}, corruptf("%d bytes, smaller than a header", len(mem))
	}
	h := (*header)(unsafe.Pointer(&mem[0]))
	if h.magic != magic {
		return Config{}, layout{}, corruptf("not an offq region (magic %#x)", h.magic)
	}
	if h.byteOrder != byteOrderMark {
		return Config{}, layout{}, corruptf("byte-order mark %#x: region written on a machine of other byte order", h.byteOrder)
	}
	if h.version != layoutVersion {
		return Config{}, layout{}, fmt.Errorf("%w: region has layout version %d, this build reads %d", ErrVersion, h.version, layoutVersion)
	}
	if err := waitReady(h, readyTimeout); err != nil {
		return Config{}, layout{}, err
	}
	if h.headerSize != headerSize {
		return Config{}, layout{}, corruptf("header size %d, want %d", h.headerSize, headerSize)
	}
	if sum := headerChecksum(mem); sum != h.checksum {
		return Config{}, layout{}, corruptf("header checksum %#x, computed %#x", h.checksum, sum)
	}
	cfg := h.cfg.config()
	if err := cfg.Validate(); err != nil {
		return Config{}, layout{}, corruptf("stored configuration: %v", err)
	}
	lay := computeLayout(cfg)
	if h.sec != lay.sec {
		return Config{}, layout{}, corruptf("section table does not match the configuration")
	}
	if h.totalSize != lay.total || uint64(len(mem)) != lay.total {
		return Config{}, layout{}, corruptf("region is %d bytes, header says %d, configuration implies %d", len(mem), h.totalSize, lay.total)
	}
	return cfg, lay, nil
}

func waitReady(h *header, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	deadline := time.Now().Add(timeout)
	for pause := 50 * time.Microsecond; ; pause = min(2*pause, 10*time.Millisecond) {
		switch s := h.state.Load(); s {
		case stateReady:
			return nil
		case stateInit:
		default:
			return corruptf("state word %d", s)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w after %v", ErrNotReady, timeout)
		}
		time.Sleep(pause)
	}
}

// OpenOrCreate attaches to the region if it exists and creates it otherwise ("detect, else
// create and configure, then attach"). When several processes race, exactly one creates and
// the others attach to its region. created reports which happened.
func OpenOrCreate(name string, opts Options) (r *Region, created bool, err error) {
	for range 8 {
		r, err = Open(name, opts)
		if !errors.Is(err, ErrNotFound) {
			return r, false, err
		}
		r, err = Create(name, opts)
		if !errors.Is(err, ErrExists) {
			return r, err == nil, err
		}
		// Lost the race to another creator, or the region was removed between the two
		// calls: try again.
	}
	return nil, false, &Error{Op: "open", Name: name, Err: errors.New("region keeps appearing and vanishing")}
}

// Unlink removes region name from dir. Processes that have it mapped keep using it until they
// close it; new opens no longer find it.
func Unlink(dir, name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if err := os.Remove(Path(dir, name)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return &Error{Op: "unlink", Name: name, Err: ErrNotFound}
		}
		return &Error{Op: "unlink", Name: name, Err: err}
	}
	return nil
}

// removeStaleInits deletes temporary files left by creators of name that died while
// initialising: the creator holds a lock on byte 0 while it works, so an unlocked one is stale.
func removeStaleInits(dir, name string) {
	prefix := "." + name + ".init-"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		f, err := openFile(p, unix.O_RDWR, 0)
		if err != nil {
			continue
		}
		if got, _ := ofdLock(f, 0); got {
			os.Remove(p)
		}
		f.Close()
	}
}

func newRegion(name, path string, f *os.File, mem []byte, cfg Config, lay layout) *Region {
	r := &Region{
		name: name,
		path: path,
		f:    f,
		mem:  mem,
		base: unsafe.Pointer(&mem[0]),
		cfg:  cfg,
		lay:  lay,
	}
	r.hdr = (*header)(r.base)
	r.shard = uint32(os.Getpid()) % poolShards
	r.pools = make([]pool, len(cfg.Classes))
	for i, cl := range cfg.Classes {
		s := lay.sec.pools[i]
		r.pools[i] = pool{
			r:      r,
			class:  i,
			hdr:    (*poolHeader)(r.at(s.off)),
			size:   uint32(cl.Size),
			count:  cl.Count,
			stride: uint32(slotOverhead) + uint32(cl.Size),
			slots:  s.off + uint64(poolHeaderSize),
		}
		r.pools[i].end = r.pools[i].slots + uint64(cl.Count)*uint64(r.pools[i].stride)
		r.maxSize = uint32(cl.Size)
		r.totalSlots += uint64(cl.Count)
		r.classSizes = append(r.classSizes, uint32(cl.Size))
	}
	r.inboxes = make([]inboxView, cfg.Inboxes)
	for i := range r.inboxes {
		r.inboxes[i] = inboxView{
			r:     r,
			index: uint32(i),
			hdr:   (*inboxHeader)(r.at(lay.sec.inboxes.off + uint64(i)*uint64(inboxHeaderSize))),
			cells: r.at(lay.sec.cells.off + uint64(i)*uint64(cfg.InboxCapacity)*8),
		}
	}
	return r
}

// at returns a pointer to the byte at offset off. Callers derive off from the validated layout
// and checked indices only; it is the single place where an offset becomes a pointer.
func (r *Region) at(off uint64) unsafe.Pointer { return unsafe.Add(r.base, off) }

// Name returns the region's name.
func (r *Region) Name() string { return r.name }

// Path returns the region's file.
func (r *Region) Path() string { return r.path }

// Config returns the region's configuration, as read from its header.
func (r *Region) Config() Config {
	c := r.cfg
	c.Classes = append([]Class(nil), r.cfg.Classes...)
	return c
}

// Owner returns the user ID that owns the region's file, as the open file says now.
func (r *Region) Owner() (uint32, error) {
	uid, _, _, err := fileOwner(r.f)
	return uid, err
}

// Size returns the region's size in bytes.
func (r *Region) Size() int { return len(r.mem) }

// Close unmaps the region and closes its file. It fails if participants of this process are
// still attached (their buffers would dangle). Close is idempotent.
func (r *Region) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		return nil
	}
	if r.attached > 0 {
		return &Error{Op: "close", Name: r.name, Err: fmt.Errorf("%d participants still attached", r.attached)}
	}
	r.closed.Store(true)
	for r.readers.Load() > 0 {
		time.Sleep(10 * time.Microsecond) // a stats read takes microseconds
	}
	err := unmap(r.mem)
	if cerr := r.f.Close(); err == nil {
		err = cerr
	}
	return err
}
