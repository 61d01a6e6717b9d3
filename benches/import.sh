#!/usr/bin/env bash
# Times a CSV import of N rows (default 100 000) into `shortlink serve` (release build, embedded
# store), through the CLI (`shortlink link import`), then checks a sample of the links redirects.
# Usage: benches/import.sh [rows]
set -euo pipefail
N=${1:-100000}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$root/target/import-bench
KEY=sl_import_bench_admin_key_000000000
rm -rf "$work" && mkdir -p "$work"
cargo build --release -q --workspace --bins
SHORTLINK_DATA_DIR=$work/data SHORTLINK_PROXY_LISTEN=127.0.0.1:18480 SHORTLINK_CONTROL_LISTEN=127.0.0.1:18481 \
  SHORTLINK_ADMIN_KEY=$KEY SHORTLINK_LOG=warn "$root/target/release/shortlink" serve >"$work/out" 2>"$work/log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -fs http://127.0.0.1:18481/readyz >/dev/null 2>&1 && break; sleep 0.1; done
{ echo "url,alias,tags"; for i in $(seq 0 $((N - 1))); do echo "https://import.example/page/$i?ref=bench,imp$i,bench"; done; } >"$work/links.csv"
start=$(date +%s.%N)
"$root/target/release/shortlink" link import "$work/links.csv" --api http://127.0.0.1:18481 --key "$KEY"
end=$(date +%s.%N)
awk -v s="$start" -v e="$end" -v n="$N" 'BEGIN { printf "imported %d rows in %.2f s (%.0f rows/s)\n", n, e - s, n / (e - s) }'
sleep 1
bad=0
for i in 0 $((N / 2)) $((N - 1)); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:18480/imp$i")
  [ "$code" = 301 ] || { echo "imp$i answered $code"; bad=1; }
done
[ "$bad" = 0 ] && echo "sampled links redirect (301)"
