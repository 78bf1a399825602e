#!/bin/sh
# run.sh REF [REPS] [IDLE] [SIZES]: build regioncost (this directory's main.go) against the
# code of git ref REF and run it: attach+publish time and idle CPU per process at each region
# size (default 8MiB,256MiB,1GiB), REPS children of each kind (default 5), idle children
# measured over IDLE (default 10s). The program is copied into a temporary worktree of REF,
# so the same measurement runs against any commit whose package bus has the calls it uses.
# Regions are created in a directory of their own in /dev/shm (up to about 1.1 GB at a time),
# removed afterwards, also when the run is interrupted.
#
#   internal/bench/regioncost/run.sh main 5 10s
#   internal/bench/regioncost/run.sh HEAD 5 10s
set -eu
ref=${1:?usage: run.sh REF [REPS] [IDLE] [SIZES]}
reps=${2:-5}
idle=${3:-10s}
sizes=${4:-8MiB,256MiB,1GiB}
here=$(cd "$(dirname "$0")" && pwd)
root=$(git -C "$here" rev-parse --show-toplevel)
tmp=$(mktemp -d)
# The regions go in a directory of their own in /dev/shm, removed on any exit: an interrupted
# run must not leave a gigabyte of shared memory behind.
shm=$(mktemp -d /dev/shm/regioncost.XXXXXX)
cleanup() {
	git -C "$root" worktree remove --force "$tmp/src" 2>/dev/null || true
	rm -rf "$tmp" "$shm"
}
trap cleanup EXIT INT TERM
commit=$(git -C "$root" rev-parse --short "$ref")
git -C "$root" worktree add --quiet --detach "$tmp/src" "$commit"
mkdir -p "$tmp/src/internal/bench/regioncost"
cp "$here/main.go" "$tmp/src/internal/bench/regioncost/main.go"
(cd "$tmp/src" && go build -o "$tmp/regioncost" ./internal/bench/regioncost)
echo "ref $ref ($commit), $(date -u '+%Y-%m-%d %H:%M UTC'), load before:$(uptime | sed 's/.*load average://')"
"$tmp/regioncost" -sizes "$sizes" -reps "$reps" -idle "$idle" -dir "$shm"
echo "load after:$(uptime | sed 's/.*load average://')"
