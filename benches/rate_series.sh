#!/usr/bin/env bash
# Open-loop latency series: several `shortlink serve` variants and nginx `return 301`, each
# driven in turn by `rate_load` at one fixed rate, rounds interleaved; prints every run and
# the median p99 per variant. For A/Bs of settings, or of thread scheduling changed from
# outside, that are too small for the closed-loop harness (load.sh) to see.
#
# Usage: VARIANTS='name|ENV=v ENV2=w|hook' benches/rate_series.sh
#   one variant per line; the env is passed to `shortlink serve`; the hook is shell run
#   after the variant is seeded and warmed, with $P its pid and these helpers:
#   `tids $P NAME` (its threads whose name contains NAME), `nontids $P NAME` (the others).
#   e.g. VARIANTS=$'on||\noff|SHORTLINK_PROXY__CAPTURE_CLICKS=false|\nidle||for t in $(tids $P store); do chrt -i -p 0 $t; done'
# Env:   RATE (req/s, default 58000), SECS (per run, 6), ROUNDS (8), N (links, 1000),
#        PRE_WRK=1 first saturates each variant with wrk for PRE_WRK_SECS (15) s, as
#        load.sh's closed-loop rounds do before its half-peak runs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$root/target/rate_series
rm -rf "$work"; mkdir -p "$work"
# shellcheck source=load/shortlink.sh
. "$root/benches/load/shortlink.sh"
N=${N:-1000}; RATE=${RATE:-58000}; SECS=${SECS:-6}; ROUNDS=${ROUNDS:-8}
[ -n "${VARIANTS:-}" ] || { echo "set VARIANTS (see the header)" >&2; exit 2; }
command -v nginx >/dev/null || { echo "installing nginx"; apt-get install -y -qq nginx-light >/dev/null; }
cargo build --release -q --workspace --bins

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
tids() { grep -l "$2" /proc/"$1"/task/*/comm | awk -F/ '{ print $5 }'; }
nontids() { for t in /proc/"$1"/task/*; do grep -q "$2" "$t/comm" || basename "$t"; done; }

names=(); ports=(); i=0
while IFS='|' read -r name envs hook; do
  [ -z "$name" ] && continue
  pp=$((18100 + 2 * i)); cp=$((18101 + 2 * i)); i=$((i + 1))
  # shellcheck disable=SC2086 # the variant's settings, space-separated
  P=$(bench_shortlink "$work/$name" $pp $cp "$root/target/release/shortlink" \
    SHORTLINK_PROXY__THREADS=2 $envs); pids+=("$P")
  bench_ready $pp
  "$root/target/release/load_seed" "http://127.0.0.1:$cp" "$KEY" "$N" >/dev/null
  sleep 0.5
  "$root/target/release/rate_load" "127.0.0.1:$pp" "$N" 5000 1 64 >/dev/null
  if [ "${PRE_WRK:-0}" = 1 ]; then
    wrk -t2 -c64 -d"${PRE_WRK_SECS:-15}s" -s "$root/benches/load/random_code.lua" \
      "http://127.0.0.1:$pp" -- "$N" "" >/dev/null
  fi
  [ -z "$hook" ] || eval "$hook"
  names+=("$name"); ports+=("$pp")
done <<<"$VARIANTS"
sed -e "s|@WORKERS@|2|" -e "s|@DIR@|$work|g" -e "s|@PORT@|18099|" \
  "$root/benches/load/nginx.conf.in" >"$work/nginx.conf"
nginx -p "$work" -c "$work/nginx.conf" -g 'daemon off;' &
pids+=("$!"); names+=(nginx); ports+=(18099)
sleep 0.5

for round in $(seq "$ROUNDS"); do
  for k in "${!names[@]}"; do
    out=$("$root/target/release/rate_load" "127.0.0.1:${ports[$k]}" "$N" "$RATE" "$SECS" 64)
    echo "round $round ${names[$k]}: $out"
    echo "$out" | sed 's/.*p99_ms=\([0-9.]*\).*/\1/' >>"$work/${names[$k]}.p99"
  done
done
median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
echo "rate=$RATE req/s, $SECS s runs, $ROUNDS rounds, $N links, 64 connections"
for name in "${names[@]}"; do
  echo "$name median_p99_ms=$(median <"$work/$name.p99") runs: $(tr '\n' ' ' <"$work/$name.p99")"
done
