#!/usr/bin/env bash
# Failed requests while the server is replaced under load. shortlink: `serve --upgrade`
# started beside the running process, which is sent SIGQUIT (it hands over its listening
# sockets, drains and exits). nginx, the peer, in the same run: a reload (SIGHUP: new
# workers, the old ones finish and quit), its everyday zero-downtime operation.
# Each server gets one `wrk` run of SECS seconds with the replacement RESTART_AT seconds in;
# the report is wrk's socket errors and non-3xx answers, and the requests served.
#
# Usage: benches/upgrade.sh [links=1000] [seconds=12] [connections=64] [restart_at=4]
# Env:   THREADS (proxy threads = nginx workers; default nproc), WRK_THREADS (default 2).
set -euo pipefail

N=${1:-1000}
SECS=${2:-12}
CONNS=${3:-64}
RESTART_AT=${4:-4}
THREADS=${THREADS:-$(nproc)}
WRK_THREADS=${WRK_THREADS:-2}
PROXY_PORT=18090
CONTROL_PORT=18091
NGINX_PORT=18092

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=load/shortlink.sh
. "$root/benches/load/shortlink.sh"
work=$root/target/upgrade
rm -rf "$work"
mkdir -p "$work/tmp"

cargo build --release -q --workspace --bins

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# The default shutdown grace (2 s), not the load harness's 0: draining needs it.
settings=(SHORTLINK_PROXY__THREADS="$THREADS" SHORTLINK_PROXY__GRACE_PERIOD_SECONDS=2)
old=$(bench_shortlink "$work/data" "$PROXY_PORT" "$CONTROL_PORT" "$root/target/release/shortlink" "${settings[@]}")
pids+=("$old")
bench_ready "$PROXY_PORT"
"$root/target/release/load_seed" "http://127.0.0.1:$CONTROL_PORT" "$KEY" "$N"

sed -e "s|@WORKERS@|$THREADS|" -e "s|@DIR@|$work|g" -e "s|@PORT@|$NGINX_PORT|" \
  "$root/benches/load/nginx.conf.in" >"$work/nginx.conf"
nginx -p "$work" -c "$work/nginx.conf" -g 'daemon off;' &
nginx_pid=$!
pids+=("$nginx_pid")
sleep 0.5

# Prints "<requests> <socket errors> <non-3xx>" of one wrk run against a port.
summary() {
  awk '
    /requests in/ { requests = $1 }
    /Socket errors/ { gsub(",", ""); errors = $4 + $6 + $8 + $10 }
    /Non-2xx or 3xx/ { bad = $5 }
    END { printf "%d %d %d\n", requests, errors, bad }' "$1"
}

wrk_run() {
  wrk -t"$WRK_THREADS" -c"$CONNS" -d"${SECS}s" -s "$root/benches/load/random_code.lua" \
    "http://127.0.0.1:$1" -- "$N" >"$2"
}

# shortlink: upgrade under load.
wrk_run "$PROXY_PORT" "$work/wrk-shortlink.txt" &
wrk_pid=$!
sleep "$RESTART_AT"
# The same settings as bench_shortlink gave the running one.
env SHORTLINK_DATA_DIR="$work/data" SHORTLINK_PROXY_LISTEN="127.0.0.1:$PROXY_PORT" \
  SHORTLINK_CONTROL_LISTEN="127.0.0.1:$CONTROL_PORT" SHORTLINK_ADMIN_KEY=$KEY SHORTLINK_LOG=warn \
  "${settings[@]}" "$root/target/release/shortlink" serve --upgrade >"$work/data-new.out" 2>"$work/data-new.log" &
new=$!
pids+=("$new")
kill -QUIT "$old"
upgrade_began=$(date +%s.%N)
while kill -0 "$old" 2>/dev/null; do sleep 0.05; done
upgrade_took=$(awk -v a="$upgrade_began" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
wait "$wrk_pid"
kill -0 "$new" || { echo "the new process is not running:"; cat "$work/data-new.log"; exit 1; }

# nginx: reload under load.
wrk_run "$NGINX_PORT" "$work/wrk-nginx.txt" &
wrk_pid=$!
sleep "$RESTART_AT"
kill -HUP "$nginx_pid"
wait "$wrk_pid"

echo "links=$N seconds=$SECS connections=$CONNS replaced_at=${RESTART_AT}s threads=$THREADS"
printf "%-34s %10s %14s %8s\n" server requests socket_errors non_3xx
read -r req err bad < <(summary "$work/wrk-shortlink.txt")
printf "%-34s %10d %14d %8d\n" "shortlink (serve --upgrade, QUIT)" "$req" "$err" "$bad"
read -r req err bad < <(summary "$work/wrk-nginx.txt")
printf "%-34s %10d %14d %8d\n" "nginx (reload, HUP)" "$req" "$err" "$bad"
echo "old shortlink process exited ${upgrade_took}s after SIGQUIT"
