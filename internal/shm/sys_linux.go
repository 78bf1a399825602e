package shm

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// openFile opens path with O_NOFOLLOW so that a symbolic link planted in a world-writable
// directory such as /dev/shm is refused rather than followed, and with O_NONBLOCK so that a
// FIFO or device planted under a region's name cannot block the open; anything but a regular
// file is refused (ErrPermission) before it is read or mapped.
func openFile(path string, flag int, mode os.FileMode) (*os.File, error) {
	fd, err := unix.Open(path, flag|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, uint32(mode.Perm()))
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("%w: %s is a symbolic link", ErrPermission, path)
		}
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	if !isRegular(st.Mode) {
		unix.Close(fd)
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrPermission, path)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// reserve allocates the file's pages now, so that a full tmpfs fails here with ENOSPC instead
// of killing a process with SIGBUS on its first write to a page that cannot be backed.
func reserve(f *os.File, size int64) error {
	err := unix.Fallocate(int(f.Fd()), 0, 0, size)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		// A file system without fallocate (rare for tmpfs-backed /dev/shm): size the file and
		// touch nothing; the pages are then allocated lazily.
		return f.Truncate(size)
	}
	if err != nil {
		return fmt.Errorf("reserve %d bytes in %s: %w", size, f.Name(), err)
	}
	return nil
}

func mapFile(f *os.File, size int, readOnly bool) ([]byte, error) {
	prot := unix.PROT_READ | unix.PROT_WRITE
	if readOnly {
		prot = unix.PROT_READ
	}
	b, err := unix.Mmap(int(f.Fd()), 0, size, prot, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap %s: %w", f.Name(), err)
	}
	return b, nil
}

func unmap(b []byte) error { return unix.Munmap(b) }

// ofdLock takes an open-file-description lock on the byte [off, off+1) of f without waiting.
// It reports false if another open file description holds a conflicting lock. The kernel drops
// the lock when the description is closed, however the process ends.
func ofdLock(f *os.File, off int64) (bool, error) { return ofdLockType(f, off, unix.F_WRLCK) }

// ofdLockShared takes a shared (read) lock, which conflicts only with exclusive ones.
func ofdLockShared(f *os.File, off int64) (bool, error) { return ofdLockType(f, off, unix.F_RDLCK) }

func ofdLockType(f *os.File, off int64, typ int16) (bool, error) {
	ok, err := ofdLockFD(int(f.Fd()), f.Name(), off, typ)
	runtime.KeepAlive(f)
	return ok, err
}

// lockFD and lockFDShared are ofdLock and ofdLockShared on a raw descriptor (see reopenFD).
func lockFD(fd int, name string, off int64) (bool, error) {
	return ofdLockFD(fd, name, off, unix.F_WRLCK)
}

func lockFDShared(fd int, name string, off int64) (bool, error) {
	return ofdLockFD(fd, name, off, unix.F_RDLCK)
}

func ofdLockFD(fd int, name string, off int64, typ int16) (bool, error) {
	lk := unix.Flock_t{Type: typ, Whence: 0, Start: off, Len: 1}
	err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk)
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("lock %s byte %d: %w", name, off, err)
	}
	return true, nil
}

// ofdUnlock releases a lock taken by ofdLock on the same description.
func ofdUnlock(f *os.File, off int64) error {
	lk := unix.Flock_t{Type: unix.F_UNLCK, Whence: 0, Start: off, Len: 1}
	return unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
}

// ofdUnlockFD is ofdUnlock on a raw descriptor.
func ofdUnlockFD(fd int, off int64) error {
	lk := unix.Flock_t{Type: unix.F_UNLCK, Whence: 0, Start: off, Len: 1}
	return unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk)
}

// ofdLocked reports whether any other open file description holds a lock on [off, off+1).
func ofdLocked(f *os.File, off int64) (bool, error) {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: off, Len: 1}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk); err != nil {
		return false, fmt.Errorf("test lock %s byte %d: %w", f.Name(), off, err)
	}
	return lk.Type != unix.F_UNLCK, nil
}

// reopen returns a new open file description of the same file (not a dup, which would share
// the description and so its locks). Like openFile it never blocks, and it checks that what
// it opened is the same regular file.
func reopen(f *os.File) (*os.File, error) {
	fd, err := reopenFD(f)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// reopenFD is reopen returning a raw descriptor. Unlike an *os.File, a raw descriptor has no
// finalizer: it stays open, and the locks taken through it stay held, until closeLockFD, however
// unreachable its owner's Go values become.
func reopenFD(f *os.File) (int, error) {
	// /proc/self/fd/N is a magic link to the open file itself, so it must be followed.
	path := fmt.Sprintf("/proc/self/fd/%d", f.Fd())
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return -1, &os.PathError{Op: "reopen", Path: f.Name(), Err: err}
	}
	var was, now unix.Stat_t
	if err := errors.Join(unix.Fstat(int(f.Fd()), &was), unix.Fstat(fd, &now)); err != nil {
		unix.Close(fd)
		return -1, &os.PathError{Op: "reopen", Path: f.Name(), Err: err}
	}
	if !isRegular(now.Mode) || now.Dev != was.Dev || now.Ino != was.Ino {
		unix.Close(fd)
		return -1, fmt.Errorf("%w: reopen %s: not the same regular file", ErrPermission, f.Name())
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return -1, &os.PathError{Op: "reopen", Path: f.Name(), Err: err}
	}
	return fd, nil
}

func closeLockFD(fd int) error { return unix.Close(fd) }

// Futex operations on words in the shared mapping. The private flag is deliberately absent:
// the waiter and the waker are different processes.
const (
	futexWait = 0 // FUTEX_WAIT
	futexWake = 1 // FUTEX_WAKE
)

// futexWaitOn sleeps while *w == val, for at most d (d <= 0: no limit). Spurious returns are
// allowed; callers re-check their condition.
func futexWaitOn(w *atomic.Uint32, val uint32, d time.Duration) {
	var tsp unsafe.Pointer
	var ts unix.Timespec
	if d > 0 {
		ts = unix.NsecToTimespec(int64(d))
		tsp = unsafe.Pointer(&ts)
	}
	unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(w)), futexWait, uintptr(val), uintptr(tsp), 0, 0)
}

// futexWakeAll wakes every process sleeping on w.
func futexWakeAll(w *atomic.Uint32) {
	unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(w)), futexWake, uintptr(1<<31-1), 0, 0, 0)
}

func fileOwner(f *os.File) (uid uint32, mode uint32, size int64, err error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, 0, 0, err
	}
	return st.Uid, st.Mode, st.Size, nil
}

func isRegular(mode uint32) bool { return mode&unix.S_IFMT == unix.S_IFREG }

func fchmod(f *os.File, mode os.FileMode) error { return unix.Fchmod(int(f.Fd()), uint32(mode.Perm())) }

func linkNoReplace(oldpath, newpath string) error { return unix.Link(oldpath, newpath) }
