package peer

import "syscall"

// sysProcAttr has the kernel kill the child when the thread that started it dies, which
// covers a test binary that is killed or crashes before its cleanups run.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
