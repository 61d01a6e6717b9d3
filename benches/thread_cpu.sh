#!/usr/bin/env bash
# Per-thread CPU and context switches of a server while `rate_load` drives it open-loop.
#
# Usage: benches/thread_cpu.sh [shortlink|nginx] [rate=97000] [seconds=10] [connections=64]
# Starts the server (shortlink serve with 1 000 seeded links, 2 proxy threads; or nginx
# `return 301` with 2 workers) on loopback, reads /proc/<pid>/task/*/{stat,status} before
# and after the run, and prints each thread's CPU (cores), voluntary and involuntary
# context switches per second over it. Build first: cargo build --release --workspace --bins
set -euo pipefail

SERVER=${1:-shortlink}
RATE=${2:-97000}
SECS=${3:-10}
CONNS=${4:-64}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$root/target/thread_cpu
rm -rf "$work"
mkdir -p "$work/logs"
# shellcheck source=load/shortlink.sh
. "$root/benches/load/shortlink.sh"
PORT=18180

case $SERVER in
  shortlink)
    pid=$(bench_shortlink "$work/data" $PORT 18181 "$root/target/release/shortlink" \
      SHORTLINK_PROXY__THREADS=2)
    trap 'kill $pid' EXIT
    bench_ready $PORT
    "$root/target/release/load_seed" http://127.0.0.1:18181 "$KEY" 1000 >/dev/null 2>&1
    threads() { ls "/proc/$pid/task"; }
    ;;
  nginx)
    sed -e "s|@WORKERS@|2|" -e "s|@DIR@|$work|g" -e "s|@PORT@|$PORT|" \
      "$root/benches/load/nginx.conf.in" >"$work/nginx.conf"
    nginx -p "$work" -c "$work/nginx.conf" -g 'daemon off;' &
    pid=$!
    trap 'kill $pid' EXIT
    threads() { pgrep -P "$pid"; }
    ;;
  *) echo "unknown server: $SERVER (shortlink or nginx)"; exit 2 ;;
esac
sleep 2

# One line per thread: tid, name (spaces as _), CPU ticks, voluntary, involuntary switches.
snapshot() {
  for tid in $(threads); do
    local t=/proc/$tid/task/$tid
    [ -d "$t" ] || t=/proc/$tid
    local name ticks switches
    name=$(tr ' ' _ <"$t/comm")
    # utime and stime are fields 14 and 15; the name in field 2 may hold spaces.
    ticks=$(sed 's/.*) //' "$t/stat" | awk '{ print $12 + $13 }')
    switches=$(awk '/^voluntary_ctxt_switches/ { v = $2 } /^nonvoluntary_ctxt_switches/ { n = $2 } END { print v, n }' "$t/status")
    echo "$tid $name $ticks $switches"
  done | sort
}

snapshot >"$work/before"
"$root/target/release/rate_load" "127.0.0.1:$PORT" 1000 "$RATE" "$SECS" "$CONNS"
snapshot >"$work/after"
hz=$(getconf CLK_TCK)
printf "%-8s %-18s %7s %12s %12s\n" tid thread cores voluntary/s involuntary/s
join "$work/before" "$work/after" |
  awk -v hz="$hz" -v s="$SECS" '{ printf "%-8s %-18s %7.3f %12.0f %12.0f\n", $1, $2, ($7 - $3) / hz / s, ($8 - $4) / s, ($9 - $5) / s }' |
  sort -k3 -n -r | awk '$3 > 0 || $4 > 0 || $2 == "nginx"'
