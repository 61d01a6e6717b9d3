#!/usr/bin/env bash
# Clicks lost to a crash: `wrk` on one link of a `shortlink serve`, which is killed with
# SIGKILL KILL_AT seconds in, then restarted on the same data; lost = redirects `wrk` saw
# answered − clicks counted once the journal is replayed. Reported in clicks and in
# milliseconds of redirects at the rate `wrk` saw.
#
# Usage: benches/crash.sh [seconds=4] [kill_at=2] [connections=64] [runs=3]
# Env:   THREADS (proxy threads; default nproc), WRK_THREADS (default 2),
#        SECOND_ENV='SHORTLINK_PROXY__X=v' runs the server with more settings
#        (e.g. SHORTLINK_PROXY__CLICK_JOURNAL=false, for the loss without the journal).
set -euo pipefail

SECS=${1:-4}
KILL_AT=${2:-2}
CONNS=${3:-64}
RUNS=${4:-3}
THREADS=${THREADS:-$(nproc)}
WRK_THREADS=${WRK_THREADS:-2}
PROXY_PORT=18095
CONTROL_PORT=18096

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=load/shortlink.sh
. "$root/benches/load/shortlink.sh"
work=$root/target/crash
rm -rf "$work"
mkdir -p "$work"

cargo build --release -q --workspace --bins

pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# shellcheck disable=SC2086 # SECOND_ENV may hold several space-separated settings
start() { bench_shortlink "$work/data-$1" "$PROXY_PORT" "$CONTROL_PORT" "$root/target/release/shortlink" \
  SHORTLINK_PROXY__THREADS="$THREADS" ${SECOND_ENV:-}; }

# Total clicks of /ld0 once the restarted server has delivered what the journal held.
counted() {
  local total=
  for _ in $(seq 200); do
    metrics=$(curl -fs "http://127.0.0.1:$CONTROL_PORT/metrics" || true)
    recovered=$(echo "$metrics" | awk '$1 == "shortlink_clicks_recovered_total" { print $2 }')
    shipped=$(echo "$metrics" | awk '$1 == "shortlink_clicks_shipped_total" { print $2 }')
    if [ -n "$recovered" ] && [ -n "$shipped" ] && awk -v s="$shipped" -v r="$recovered" 'BEGIN { exit !(s >= r) }'; then
      total=$(curl -fs -H "Authorization: Bearer $KEY" "http://127.0.0.1:$CONTROL_PORT/api/v1/links/ld0/stats" |
        sed -n 's/.*"total":\([0-9]*\).*/\1/p')
      break
    fi
    sleep 0.1
  done
  echo "${total:-0}"
}

printf "%-4s %10s %8s %8s %8s %10s %9s\n" run answered rps counted lost lost_ms recovered
for run in $(seq "$RUNS"); do
  pid=$(start "$run")
  pids+=("$pid")
  bench_ready "$PROXY_PORT"
  "$root/target/release/load_seed" "http://127.0.0.1:$CONTROL_PORT" "$KEY" 1 >/dev/null
  wrk -t"$WRK_THREADS" -c"$CONNS" -d"${SECS}s" "http://127.0.0.1:$PROXY_PORT/ld0" >"$work/wrk-$run.txt" &
  wrk_pid=$!
  sleep "$KILL_AT"
  kill -9 "$pid"
  wait "$wrk_pid" || true
  answered=$(awk '/requests in/ { print $1 }' "$work/wrk-$run.txt")
  pid=$(start "$run")
  pids+=("$pid")
  bench_ready "$PROXY_PORT"
  total=$(counted)
  recovered=$(curl -fs "http://127.0.0.1:$CONTROL_PORT/metrics" | awk '$1 == "shortlink_clicks_recovered_total" { print $2 }')
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  awk -v run="$run" -v a="$answered" -v t="$total" -v secs="$KILL_AT" -v r="$recovered" 'BEGIN {
    rps = a / secs; lost = a - t
    printf "%-4s %10d %8.0f %8d %8d %10.1f %9d\n", run, a, rps, t, lost, lost / rps * 1000, r }'
done
