#!/usr/bin/env bash
# A/B of two shortlink binaries on the same box, interleaved round by round: both serve 1 000
# links, wrk alternates between them; prints each one's median req/s, CPU ms per 1 000
# redirects (from /proc/<pid>/stat), and the median per-round req/s ratio A/B.
#
# Usage: benches/ab.sh BINARY_A BINARY_B        Env: ROUNDS (10), SECS (5), CONNS (64)
# Build the two binaries first (e.g. copy target/release/shortlink aside between builds).
# RATE=N instead drives each open-loop at N req/s with `rate_load` (64 connections) and
# compares latency: each one's median p50 and p99 (ms) and the median per-round p99 ratio A/B.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -q --workspace --bins
# shellcheck source=load/shortlink.sh
. "$root/benches/load/shortlink.sh"
W=$root/target/ab; rm -rf $W; mkdir -p $W
A=$(bench_shortlink $W/a 18180 18181 "$1"); B=$(bench_shortlink $W/b 18280 18281 "$2")
sleep 1.5
$root/target/release/load_seed http://127.0.0.1:18181 $KEY 1000 >/dev/null
$root/target/release/load_seed http://127.0.0.1:18281 $KEY 1000 >/dev/null
sleep 1
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
run() { # pid port
  local c0=$(cpu $1)
  local out=$(wrk -t2 -c${CONNS:-64} -d${SECS:-5}s -s $root/benches/load/random_code.lua http://127.0.0.1:$2 -- 1000)
  local c1=$(cpu $1)
  local rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  local reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  echo "$rps $(( (c1-c0)*10 )) $reqs" | awk '{printf "%.0f %.2f\n", $1, $2*1000/$3}'
}
rate() { # pid port -> "p50 p99"
  $root/target/release/rate_load 127.0.0.1:$2 1000 "$RATE" "${SECS:-5}" 64 |
    sed -E 's/.*p50_ms=([0-9.]+).*p99_ms=([0-9.]+).*/\1 \2/'
}
if [ -n "${RATE:-}" ]; then
  for r in $(seq ${ROUNDS:-10}); do
    a=$(rate $A 18180); b=$(rate $B 18280)
    echo "round $r p50 p99 A: $a  B: $b"
    echo "$a" >> $W/la; echo "$b" >> $W/lb
  done
fi
[ -n "${RATE:-}" ] && ROUNDS=0
for r in $(seq ${ROUNDS:-10}); do
  a=$(run $A 18180); b=$(run $B 18280)
  echo "round $r A: $a  B: $b"
  echo "$a" >> $W/ra; echo "$b" >> $W/rb
done
med() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
if [ -s $W/la ]; then
  echo "A median p50 $(awk '{print $1}' $W/la | med) ms, p99 $(awk '{print $2}' $W/la | med) ms"
  echo "B median p50 $(awk '{print $1}' $W/lb | med) ms, p99 $(awk '{print $2}' $W/lb | med) ms"
  echo "median per-round p99 ratio A/B $(paste $W/la $W/lb | awk '{print $2/$4}' | med)"
  kill $A $B; wait 2>/dev/null; exit 0
fi
echo "A median rps $(awk '{print $1}' $W/ra | med), cpu ms/1000 req $(awk '{print $2}' $W/ra | med)"
echo "B median rps $(awk '{print $1}' $W/rb | med), cpu ms/1000 req $(awk '{print $2}' $W/rb | med)"
echo "median per-round rps ratio A/B $(paste $W/ra $W/rb | awk '{print $1/$3}' | med)"
kill $A $B; wait 2>/dev/null
