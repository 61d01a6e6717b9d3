#!/usr/bin/env bash
# CPU per request: shortlink variants, nginx `return 301` and redirect_peer modes under wrk,
# interleaved round by round; prints each run and the medians of server CPU µs per request
# (from /proc/<pid>/stat, children included for nginx) and req/s; each run also prints the
# box's CPU per request and its idle CPUs (idle + iowait ticks per second of the run).
#
# Usage: VARIANTS='name|ENV=v ...' [PEERS="tokio-raw pingora-app"] benches/cpu_per_request.sh
#   one shortlink variant per line (name|settings); Env: ROUNDS (4), SECS (5), CONNS (256), N (1000).
# e.g. VARIANTS=$'on|' PEERS="tokio-raw pingora-app" ROUNDS=6 benches/cpu_per_request.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
(cd "$root" && cargo build --release -q --workspace --bins)
work=$root/target/cpu_per_request; rm -rf $work; mkdir -p $work
# shellcheck source=load/shortlink.sh
. "$root/benches/load/shortlink.sh"
N=${N:-1000}; SECS=${SECS:-5}; ROUNDS=${ROUNDS:-4}; CONNS=${CONNS:-256}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
names=(); ports=(); ppids=(); i=0
while IFS='|' read -r name envs; do
  [ -z "$name" ] && continue
  pp=$((18100 + 2 * i)); cp=$((18101 + 2 * i)); i=$((i + 1))
  # shellcheck disable=SC2086 # the variant's settings, space-separated
  P=$(bench_shortlink "$work/$name" $pp $cp "${BIN:-$root/target/release/shortlink}" \
    SHORTLINK_PROXY__THREADS=2 $envs); pids+=("$P")
  bench_ready $pp
  "$root/target/release/load_seed" "http://127.0.0.1:$cp" "$KEY" "$N" >/dev/null
  names+=("$name"); ports+=("$pp"); ppids+=("$P")
done <<<"$VARIANTS"
sed -e "s|@WORKERS@|2|" -e "s|@DIR@|$work|g" -e "s|@PORT@|18099|" \
  "$root/benches/load/nginx.conf.in" >"$work/nginx.conf"
nginx -p "$work" -c "$work/nginx.conf" -g 'daemon off;' &
NP=$!; pids+=("$NP"); sleep 0.5
names+=(nginx); ports+=(18099); ppids+=("$NP")
pp=18120
for m in ${PEERS:-}; do
  $root/target/release/redirect_peer $m 127.0.0.1:$pp $N 2 >$work/peer-$m.log 2>&1 &
  pids+=("$!"); names+=($m); ports+=($pp); ppids+=("$!"); pp=$((pp+1))
done
sleep 1
cpu() { # total ticks of a process and its children (nginx workers)
  local t=0
  for p in $1 $(pgrep -P $1 || true); do
    t=$((t + $(awk '{print $14+$15}' /proc/$p/stat)))
  done; echo $t; }
for round in $(seq $ROUNDS); do
  for k in "${!names[@]}"; do
    c0=$(cpu ${ppids[$k]}); s0=$(awk '/^cpu /{print $2+$3+$4+$6+$7+$8}' /proc/stat)
    i0=$(awk '/^cpu /{print $5+$6}' /proc/stat)
    out=$(wrk -t2 -c$CONNS -d${SECS}s -s $root/benches/load/random_code.lua http://127.0.0.1:${ports[$k]} -- $N "")
    c1=$(cpu ${ppids[$k]}); s1=$(awk '/^cpu /{print $2+$3+$4+$6+$7+$8}' /proc/stat)
    i1=$(awk '/^cpu /{print $5+$6}' /proc/stat)
    rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
    reqs=$(echo "$out" | awk '/requests in/{print $1}')
    server_us=$(echo "($c1-$c0)*10000/$reqs" | bc -l)
    echo "$round ${names[$k]} $rps $server_us" >> $work/series
    echo "round $round ${names[$k]} rps=$rps server_us_per_req=$(echo "$server_us" | cut -c1-5)" \
      "box_us_per_req=$(echo "($s1-$s0)*10000/$reqs" | bc -l | cut -c1-5)" \
      "idle_cpus=$(echo "($i1-$i0)/100/$SECS" | bc -l | cut -c1-4)"
  done
done

echo "== medians: server CPU us/req, req/s"
for n in "${names[@]}"; do
  awk -v n=$n '$2==n {print $4}' $work/series | sort -g | awk -v n=$n '{a[NR]=$1} END {printf "%-12s cpu_us=%.3f ", n, (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'
  awk -v n=$n '$2==n {print $3}' $work/series | sort -g | awk '{a[NR]=$1} END {printf "rps=%.0f\n", (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'
done
