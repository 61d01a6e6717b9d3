#!/usr/bin/env bash
# Load harness: shortlink's redirect proxy against nginx `return 301`, on the same box, in
# the same run, interleaved round by round. Reports median requests/s, p50/p99 latency,
# the shortlink/nginx ratio, and the process's RSS after loading the links.
#
# Usage: benches/load.sh [links=1000] [rounds=3] [seconds=10] [connections=64]
# Env:   THREADS (proxy threads = nginx workers; default nproc), WRK_THREADS (default 2),
#        CAPTURE_OFF=1 also runs a second shortlink with click capture off, interleaved,
#        and reports the capture-on/capture-off throughput ratio (CAPTURE_AA=1: both
#        instances capture, to measure the harness's bias on that ratio);
#        FAST_PATH_OFF=1 instead runs the second shortlink with the redirect fast path off
#        (every request through pingora's ProxyHttp) and reports fast-path on/off;
#        SECOND_ENV='SHORTLINK_PROXY__X=v' (with SECOND_LABEL) runs the second shortlink with
#        any other settings (space-separated), for an A/B of them within one run;
#        SECOND_SEED=capped seeds the second shortlink's links with a click limit (every
#        redirect answered from a click lease), e.g. SECOND_ENV=SHORTLINK_PROXY__CAPTURE_CLICKS=true
#        SECOND_LABEL=capped SECOND_SEED=capped for capped/uncapped;
#        TARGETED=1 also runs a second shortlink whose links carry targeting rules
#        (iOS, Android, two countries), interleaved, and reports targeted/untargeted;
#        PEERS=1 also runs the peers of `redirect_peer` (axum, pingora ServeHttp, minimal
#        pingora ProxyHttp) over the same route table, interleaved, with their ratios to nginx;
#        HALF_PEAK=1 then drives shortlink and nginx (and the second shortlink, if any)
#        open-loop (`rate_load`) at half of shortlink's median rate for SECS*2 seconds
#        each, HALF_ROUNDS times (default 1), and reports p50/p99 from when each request
#        was due, then each server's median p99 over the rounds (HALF_SHARE=0.25: at a
#        quarter of the peak instead); before each round it prints the
#        box's own CPU stalls (`cpu_gaps`, 3 s);
#        FLAME=1 records shortlink with `perf` (DWARF call graphs) during round 1's run and
#        writes benches/flamegraphs/redirect-<links>.svg (installs inferno with cargo);
#        UA sets the User-Agent every request sends (default none; with TARGETED=1 a
#        desktop Chrome's, which no device rule matches: every rule is evaluated).
set -euo pipefail

N=${1:-1000}
ROUNDS=${2:-3}
SECS=${3:-10}
CONNS=${4:-64}
THREADS=${THREADS:-$(nproc)}
WRK_THREADS=${WRK_THREADS:-2}
PROXY_PORT=18080
CONTROL_PORT=18081
NGINX_PORT=18082
OFF_PROXY_PORT=18083
OFF_CONTROL_PORT=18084
CAPTURE_OFF=${CAPTURE_OFF:-0}
FAST_PATH_OFF=${FAST_PATH_OFF:-0}
# The second instance (CAPTURE_OFF or FAST_PATH_OFF): its label and its setting.
second_label=capture-off
second_env=SHORTLINK_PROXY__CAPTURE_CLICKS=false
[ "${CAPTURE_AA:-0}" = 1 ] && second_env=SHORTLINK_PROXY__CAPTURE_CLICKS=true
if [ "$FAST_PATH_OFF" = 1 ]; then
  CAPTURE_OFF=1
  second_label=fast-path-off
  second_env=SHORTLINK_PROXY__FAST_PATH=false
fi
if [ -n "${SECOND_ENV:-}" ]; then
  CAPTURE_OFF=1
  second_label=${SECOND_LABEL:-second}
  second_env=$SECOND_ENV
fi
TARGETED=${TARGETED:-0}
PEERS=${PEERS:-0}
PEER_MODES=(axum pingora-serve pingora-proxy)
PEER_PORTS=(18087 18088 18089)
TARGETED_PROXY_PORT=18085
TARGETED_CONTROL_PORT=18086
CHROME_UA="Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
if [ "$TARGETED" = 1 ]; then UA=${UA-$CHROME_UA}; fi
UA=${UA:-}

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=load/shortlink.sh
. "$root/benches/load/shortlink.sh"
work=$root/target/load
rm -rf "$work"
mkdir -p "$work/tmp"

need() { command -v "$1" >/dev/null 2>&1 || { echo "installing $2"; apt-get install -y -qq "$2" >/dev/null; }; }
need wrk wrk
need nginx nginx-light

# One build of every binary with the workspace's feature set (what the tests build too, so
# nothing is compiled twice): shortlink, load_seed, redirect_peer, rate_load.
cargo build --release -q --workspace --bins

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# Starts `shortlink serve` on a proxy and a control port with extra env; prints its pid.
start_shortlink() {
  local name=$1 proxy_port=$2 control_port=$3
  shift 3
  bench_shortlink "$work/$name" "$proxy_port" "$control_port" "$root/target/release/shortlink" \
    SHORTLINK_PROXY__THREADS="$THREADS" "$@"
}

# Waits for an instance (pid, name), seeds it, and checks one link answers 301.
seed() {
  local pid=$1 name=$2 proxy_port=$3 control_port=$4 variant=${5:-}
  sleep 0.3
  kill -0 "$pid" 2>/dev/null || { echo "shortlink ($name) exited:"; cat "$work/$name.log"; exit 1; }
  bench_ready "$proxy_port" || exit 1
  "$root/target/release/load_seed" "http://127.0.0.1:$control_port" "$KEY" "$N" $variant
  sleep 1
  local status
  status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$proxy_port/ld$((N - 1))")
  [ "$status" = 301 ] || { echo "sanity check failed: /ld$((N - 1)) answered $status"; exit 1; }
  if [ "$variant" = targeted ]; then
    local location
    location=$(curl -s -o /dev/null -w '%{redirect_url}' -A "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)" \
      "http://127.0.0.1:$proxy_port/ld$((N - 1))")
    case $location in https://apps.apple.com/*) ;; *) echo "sanity check failed: targeted /ld$((N - 1)) went to $location"; exit 1 ;; esac
  fi
}

sl_pid=$(start_shortlink data "$PROXY_PORT" "$CONTROL_PORT")
pids+=("$sl_pid")
sleep 0.5
rss_before=$(awk '/VmRSS/ {print $2}' "/proc/$sl_pid/status")
seed "$sl_pid" data "$PROXY_PORT" "$CONTROL_PORT"
rss_after=$(awk '/VmRSS/ {print $2}' "/proc/$sl_pid/status")
if [ "$CAPTURE_OFF" = 1 ]; then
  # CAPTURE_AA=1 leaves capture on in the second instance too: an A/A run that measures
  # the harness's own bias (order in the round, data folder) on the capture ratio.
  # shellcheck disable=SC2086 # SECOND_ENV may hold several space-separated settings
  off_pid=$(start_shortlink data-off "$OFF_PROXY_PORT" "$OFF_CONTROL_PORT" $second_env)
  pids+=("$off_pid")
  seed "$off_pid" data-off "$OFF_PROXY_PORT" "$OFF_CONTROL_PORT" "${SECOND_SEED:-}"
fi
if [ "$TARGETED" = 1 ]; then
  targeted_pid=$(start_shortlink data-targeted "$TARGETED_PROXY_PORT" "$TARGETED_CONTROL_PORT")
  pids+=("$targeted_pid")
  seed "$targeted_pid" data-targeted "$TARGETED_PROXY_PORT" "$TARGETED_CONTROL_PORT" targeted
fi

if [ "$PEERS" = 1 ]; then
  for i in "${!PEER_MODES[@]}"; do
    "$root/target/release/redirect_peer" "${PEER_MODES[$i]}" "127.0.0.1:${PEER_PORTS[$i]}" "$N" "$THREADS" \
      >"$work/peer-${PEER_MODES[$i]}.log" 2>&1 &
    pids+=("$!")
  done
  sleep 1
  for i in "${!PEER_MODES[@]}"; do
    status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${PEER_PORTS[$i]}/ld$((N - 1))")
    [ "$status" = 301 ] || { echo "peer ${PEER_MODES[$i]} answered $status"; cat "$work/peer-${PEER_MODES[$i]}.log"; exit 1; }
    : >"$work/peer-${PEER_MODES[$i]}.runs"
  done
fi

sed -e "s|@WORKERS@|$THREADS|" -e "s|@DIR@|$work|g" -e "s|@PORT@|$NGINX_PORT|" \
  "$root/benches/load/nginx.conf.in" >"$work/nginx.conf"
nginx -p "$work" -c "$work/nginx.conf" -g 'daemon off;' &
pids+=("$!")
sleep 0.5

# Prints "<req/s> <p50 ms> <p99 ms> <non-3xx count>" for one wrk run against a port.
run_wrk() {
  local out
  out=$(wrk -t"$WRK_THREADS" -c"$CONNS" -d"${SECS}s" --latency -s "$root/benches/load/random_code.lua" \
    "http://127.0.0.1:$1" -- "$N" "$UA")
  echo "$out" >>"$work/wrk.txt"
  echo "$out" | awk '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    /Requests\/sec/ { rps = $2 }
    /^ +50%/ { p50 = ms($2) }
    /^ +99%/ { p99 = ms($2) }
    /Non-2xx or 3xx/ { bad = $5 }
    END { printf "%s %.3f %.3f %d\n", rps, p50, p99, bad }'
}

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

: >"$work/shortlink.runs"
: >"$work/nginx.runs"
: >"$work/capture-off.runs"
: >"$work/targeted.runs"
if [ "${FLAME:-0}" = 1 ]; then
  command -v perf >/dev/null || { echo "FLAME=1 needs perf (apt-get install linux-perf)"; exit 1; }
  command -v inferno-flamegraph >/dev/null || cargo install -q --locked inferno
fi
for round in $(seq "$ROUNDS"); do
  if [ "${FLAME:-0}" = 1 ] && [ "$round" = 1 ]; then
    perf record -q -F 299 --call-graph dwarf,16384 -p "$sl_pid" -o "$work/perf.data" -- sleep "$SECS" 2>/dev/null &
    perf_pid=$!
  fi
  run_wrk "$PROXY_PORT" | tee -a "$work/shortlink.runs" | sed "s/^/round $round shortlink: /"
  if [ -n "${perf_pid:-}" ]; then
    wait "$perf_pid" || true
    perf_pid=
    mkdir -p "$root/benches/flamegraphs"
    perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf >"$work/perf.folded"
    inferno-flamegraph --title "shortlink serve, wrk -c$CONNS, $N links" <"$work/perf.folded" \
      >"$root/benches/flamegraphs/redirect-$N.svg"
    echo "flamegraph: benches/flamegraphs/redirect-$N.svg"
  fi
  run_wrk "$NGINX_PORT" | tee -a "$work/nginx.runs" | sed "s/^/round $round nginx:     /"
  if [ "$CAPTURE_OFF" = 1 ]; then
    run_wrk "$OFF_PROXY_PORT" | tee -a "$work/capture-off.runs" | sed "s/^/round $round $second_label: /"
  fi
  if [ "$PEERS" = 1 ]; then
    for i in "${!PEER_MODES[@]}"; do
      run_wrk "${PEER_PORTS[$i]}" | tee -a "$work/peer-${PEER_MODES[$i]}.runs" | sed "s/^/round $round ${PEER_MODES[$i]}: /"
    done
  fi
  if [ "$TARGETED" = 1 ]; then
    run_wrk "$TARGETED_PROXY_PORT" | tee -a "$work/targeted.runs" | sed "s/^/round $round targeted:  /"
  fi
done

col() { awk -v c="$1" '{ print $c }' "$2" | median; }
sl_rps=$(col 1 "$work/shortlink.runs"); ng_rps=$(col 1 "$work/nginx.runs")
echo
echo "links=$N rounds=$ROUNDS seconds=$SECS connections=$CONNS proxy_threads=$THREADS nginx_workers=$THREADS wrk_threads=$WRK_THREADS"
printf "%-10s %12s %9s %9s\n" server "median_rps" "p50_ms" "p99_ms"
printf "%-10s %12.0f %9.3f %9.3f\n" shortlink "$sl_rps" "$(col 2 "$work/shortlink.runs")" "$(col 3 "$work/shortlink.runs")"
printf "%-10s %12.0f %9.3f %9.3f\n" nginx "$ng_rps" "$(col 2 "$work/nginx.runs")" "$(col 3 "$work/nginx.runs")"
awk -v a="$sl_rps" -v b="$ng_rps" 'BEGIN { printf "ratio of medians shortlink/nginx = %.3f\n", a / b }'
# Each round runs both servers back to back, so the per-round ratio cancels slow drifts
# of the machine; its median is the steadier figure.
round_ratio=$(paste "$work/shortlink.runs" "$work/nginx.runs" | awk '{ print $1 / $5 }' | median)
printf "median per-round ratio shortlink/nginx = %.3f\n" "$round_ratio"
if [ "$CAPTURE_OFF" = 1 ]; then
  off_rps=$(col 1 "$work/capture-off.runs")
  printf "%-10s %12.0f %9.3f %9.3f\n" "$second_label" "$off_rps" "$(col 2 "$work/capture-off.runs")" "$(col 3 "$work/capture-off.runs")"
  capture_ratio=$(paste "$work/shortlink.runs" "$work/capture-off.runs" | awk '{ print $1 / $5 }' | median)
  second_ratio=$(paste "$work/capture-off.runs" "$work/nginx.runs" | awk '{ print $1 / $5 }' | median)
  printf "median per-round ratio shortlink/%s = %.3f (%s/nginx %.3f)\n" "$second_label" "$capture_ratio" "$second_label" "$second_ratio"
fi
if [ "$TARGETED" = 1 ]; then
  t_rps=$(col 1 "$work/targeted.runs")
  printf "%-10s %12.0f %9.3f %9.3f\n" targeted "$t_rps" "$(col 2 "$work/targeted.runs")" "$(col 3 "$work/targeted.runs")"
  targeted_ratio=$(paste "$work/targeted.runs" "$work/shortlink.runs" | awk '{ print $1 / $5 }' | median)
  printf "median per-round ratio targeted/untargeted = %.3f\n" "$targeted_ratio"
fi
if [ "$PEERS" = 1 ]; then
  for mode in "${PEER_MODES[@]}"; do
    runs="$work/peer-$mode.runs"
    printf "%-14s %12.0f %9.3f %9.3f  per-round ratio to nginx %.3f\n" "$mode" "$(col 1 "$runs")" "$(col 2 "$runs")" "$(col 3 "$runs")" \
      "$(paste "$runs" "$work/nginx.runs" | awk '{ print $1 / $5 }' | median)"
  done
fi
if [ "${HALF_PEAK:-0}" = 1 ]; then
  share=${HALF_SHARE:-0.5}
  rate=$(awk -v r="$sl_rps" -v s="$share" 'BEGIN { printf "%d", r * s }')
  echo "open loop at $share of shortlink's median rate ($rate req/s), $CONNS connections, $((SECS * 2)) s:"
  targets=("shortlink $PROXY_PORT" "nginx $NGINX_PORT")
  [ "$CAPTURE_OFF" = 1 ] && targets+=("$second_label $OFF_PROXY_PORT")
  for round in $(seq "${HALF_ROUNDS:-1}"); do
    # The box's own stalls just before the round: a CPU taken away for milliseconds sets a
    # floor under every server's p99 (see cpu_gaps.rs).
    printf "%-14s " "box"
    "$root/target/release/cpu_gaps" 3 | tail -1
    for target in "${targets[@]}"; do
      set -- $target
      printf "%-14s " "$1"
      "$root/target/release/rate_load" "127.0.0.1:$2" "$N" "$rate" "$((SECS * 2))" "$CONNS" |
        tee -a "$work/half-$1.runs"
    done
  done
  # One run's p99 is mostly the box's stalls in it: the median over the rounds compares.
  for target in "${targets[@]}"; do
    set -- $target
    sed 's/.*p99_ms=\([0-9.]*\).*/\1/' "$work/half-$1.runs" >"$work/half-$1.p99"
    printf "%-14s median p99 over %d runs %.3f ms, at or under 1 ms in %d\n" "$1" \
      "$(wc -l <"$work/half-$1.p99")" "$(median <"$work/half-$1.p99")" \
      "$(awk '$1 <= 1 { n++ } END { print n + 0 }' "$work/half-$1.p99")"
  done
fi
[ -z "$UA" ] || echo "user agent sent: $UA"
echo "shortlink RSS: ${rss_before} KiB before loading, ${rss_after} KiB after $N links"
bad=$(awk '{ s += $4 } END { print s + 0 }' "$work/shortlink.runs")
[ "$bad" = 0 ] || echo "WARNING: shortlink answered $bad non-3xx responses"
