#!/usr/bin/env bash
# Many small files on loopback: punchgate send/get beside sendme (iroh) on
# the same folder, in the same run (issue 14). Each receive is timed from
# its start to its exit, into an empty folder on the same disk, RUNS times,
# alternating the two; the table gives every run and the median.
#
# The received trees are removed only after the last run: on ext4 without a
# journal (this machine's), creating a file within about a minute of
# thousands being deleted nearby costs ~250 µs instead of ~8 µs (the inode
# allocator skips recently deleted inodes one by one, `recently_deleted()`
# in ext4's ialloc.c), so cleaning up between runs would time the
# filesystem digesting the other tool's last run. Leave a minute between
# two runs of this script for the same reason. For the same fairness each
# receive starts with nothing dirty in the page cache (`sync` first), so
# that one tool's durability step (punchgate syncs what it received before
# it names the files) does not flush the other's writes.
#
#   sudo bash benches/small_files.sh              # 5,000 files, 5 runs each
#   FILES=100000 RUNS=3 sudo bash benches/small_files.sh
#
# Needs root: both tools run in a network namespace of their own with only
# loopback up, so nothing either does (sendme's discovery included) can
# reach another address. sendme is installed if missing (`cargo install
# sendme --version 0.37.1 --locked`); relays are off for it and its ticket
# holds addresses only.
set -euo pipefail

FILES=${FILES:-5000}
RUNS=${RUNS:-5}
cd "$(dirname "$0")/.."
cargo build --release --quiet
PUNCHGATE=$PWD/target/release/punchgate
SENDME=${SENDME:-$(command -v sendme || true)}
if [ -z "$SENDME" ]; then
    cargo install sendme --version 0.37.1 --locked --quiet
    SENDME=$HOME/.cargo/bin/sendme
fi

ns=pgsmall$$
work=$(mktemp -d "${TMPDIR:-/var/tmp}/small-files.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
run() { ip netns exec "$ns" "$@"; }

python3 - "$work/many" "$FILES" <<'PY'
import os, sys
root, count = sys.argv[1], int(sys.argv[2])
for i in range(count):
    folder = os.path.join(root, "d%03d" % (i % 100))
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "f%06d" % i), "wb") as f:
        f.write(bytes([i % 251]) * (i % 700))
PY
bytes=$(du -sb "$work/many" | cut -f1)

# The first line of FILE matching PATTERN, once it is there.
first_line() {
    local file=$1 pattern=$2
    for _ in $(seq 600); do
        if grep -m1 -o "$pattern" "$file" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing matching $pattern in $file" >&2
    cat "$file" >&2
    exit 1
}

# Started without a subshell in between (`ip netns exec` execs the
# program), so that the pid kept is the program's and cleanup ends it.
ip netns exec "$ns" "$PUNCHGATE" --home "$work/tracker" --json tracker --listen 127.0.0.1:0 >"$work/tracker.log" 2>&1 &
pids+=($!)
target=$(first_line "$work/tracker.log" '[a-z2-7]\{52\}@127\.0\.0\.1:[0-9]*')
ip netns exec "$ns" "$PUNCHGATE" --home "$work/sender" --json send "$work/many" --tracker "$target" --bind 127.0.0.1:0 >"$work/send.log" 2>&1 &
pids+=($!)
ticket=$(first_line "$work/send.log" 'pgt1[a-z2-7]*')
(cd "$work" && exec ip netns exec "$ns" "$SENDME" send many --relay disabled --ticket-type addresses \
    --magic-ipv4-addr 127.0.0.1:0 --no-progress >"$work/sendme.log" 2>&1) &
pids+=($!)
sendme_ticket=$(first_line "$work/sendme.log" 'blob[a-z0-9]*')

now() { date +%s.%N; }
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
pg_times=() sm_times=()
for i in $(seq "$RUNS"); do
    sync
    start=$(now)
    run "$PUNCHGATE" --home "$work/getter$i" get "$ticket" -o "$work/pg$i" --bind 127.0.0.1:0 >/dev/null 2>"$work/get$i.err"
    pg_times+=("$(echo "$(now) - $start" | bc)")
    diff -r "$work/many" "$work/pg$i/many" >/dev/null

    mkdir -p "$work/sm$i"
    sync
    start=$(now)
    (cd "$work/sm$i" && run "$SENDME" receive "$sendme_ticket" --relay disabled --no-progress >/dev/null 2>&1)
    sm_times+=("$(echo "$(now) - $start" | bc)")
    diff -r "$work/many" "$work/sm$i/many" >/dev/null
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "$FILES files, $bytes bytes, loopback, $(nproc) cores, $(uname -r); each receive start to exit, into an empty folder"
echo "load average (1, 5, 15 min) before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '| %-9s | %-8s | %s |\n' tool median runs
printf '| %-9s | %-8s | %s |\n' --- --- ---
printf '| %-9s | %6.2f s | %s |\n' punchgate "$(median "${pg_times[@]}")" "$(printf '%.2f ' "${pg_times[@]}")"
printf '| %-9s | %6.2f s | %s |\n' "sendme $("$SENDME" --version | awk '{print $2}')" "$(median "${sm_times[@]}")" "$(printf '%.2f ' "${sm_times[@]}")"
