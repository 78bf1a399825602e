package main

// Who owns a bus, and the one rule about buses owned by another user (docs/operations.md):
// the commands that only read a bus (info, ls, stat, top) read any bus the operating system
// lets them open, and show whose it is; those that attach to a bus or change it (pub, sub,
// reap, rm) refuse one owned by another user unless told (--allow-foreign-owner; --force for
// rm). In a world-writable directory such as /dev/shm anyone can plant a file under a bus's
// name: looking at it is harmless, writing to it or removing it is not.

import (
	"fmt"
	"os"
	"strconv"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/offq/offq/internal/statview"
	"github.com/offq/offq/transport"
)

// fileOwner returns the user ID owning path (not following a symbolic link); ok is false if
// it cannot be told (no such file).
func fileOwner(path string) (uid uint32, ok bool) {
	fi, err := os.Lstat(path)
	if err != nil {
		return 0, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Uid, true
}

// ownerColumn is the owner in a table: the user's name, or the uid for a user without one.
func ownerColumn(uid uint32) string {
	if n := statview.UserName(uid); n != "" {
		return n
	}
	return strconv.FormatUint(uint64(uid), 10)
}

// foreign reports whether uid is another user than the one running offq.
func foreign(uid uint32) bool { return uid != uint32(os.Geteuid()) }

// checkOwner refuses bus name when its file is owned by another user, unless allowed; the
// refusal names the owner and ends with hint (what to do about it). A missing file is left to
// the caller. (The shm package checks again on the open file: this check is for the words.)
func (a *app) checkOwner(name string, allowed bool, hint string) error {
	uid, ok := fileOwner(transport.Path(a.dir, name))
	if !ok || !foreign(uid) || allowed {
		return nil
	}
	return fmt.Errorf("bus %q is owned by %s, not by the user running offq; %s", name, statview.OwnerText(uid), hint)
}

// overrideHint is checkOwner's hint for a command whose flag allows another user's bus.
func overrideHint(flag string) string { return "pass " + flag + " to go ahead anyway" }

// registerForeign adds --allow-foreign-owner, for the commands that attach to a bus.
func registerForeign(fs *pflag.FlagSet, allow *bool) {
	fs.BoolVar(allow, "allow-foreign-owner", false, "attach to a bus whose file another user owns (refused by default: anyone can plant a file in /dev/shm)")
}
