#!/usr/bin/env bash
# TLS bench: shortlink's HTTPS listener against nginx with the same certificate (ECDSA
# P-256) and TLS 1.3 only, on the same box, in the same run, interleaved round by round:
#   keepalive  redirects over kept-alive TLS connections (wrk, random codes)
#   handshake  new TLS connections per second, one redirect each (wrk, Connection: close)
#   h2         HTTP/2 redirects over TLS (h2load, 10 streams per connection)
# Reports each server's median requests/s and the median per-round ratio shortlink/nginx.
#
# Usage: benches/tls.sh [links=1000] [rounds=3] [seconds=10] [connections=64]
# Env:   THREADS (proxy threads = nginx workers; default nproc), WRK_THREADS (default 2).
set -euo pipefail

N=${1:-1000}
ROUNDS=${2:-3}
SECS=${3:-10}
CONNS=${4:-64}
THREADS=${THREADS:-$(nproc)}
WRK_THREADS=${WRK_THREADS:-2}
PROXY_PORT=18180
CONTROL_PORT=18181
TLS_PORT=18182
NGINX_PORT=18183

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=load/shortlink.sh
. "$root/benches/load/shortlink.sh"
work=$root/target/load-tls
rm -rf "$work"
mkdir -p "$work/tmp"

need() { command -v "$1" >/dev/null 2>&1 || { echo "installing $2"; apt-get install -y -qq "$2" >/dev/null; }; }
need wrk wrk
need nginx nginx-light
need h2load nghttp2-client
need openssl openssl

cargo build --release -q --workspace --bins

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# One certificate for both servers: ECDSA P-256, as ACME issues by default.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -subj /CN=127.0.0.1 -addext "subjectAltName=DNS:bench.test,IP:127.0.0.1" \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat >"$work/shortlink.toml" <<TOML
[proxy.tls]
listen = "127.0.0.1:$TLS_PORT"
certificates = [{ cert = "$work/cert.pem", key = "$work/key.pem" }]
tls13_only = true
TOML

sl_pid=$(bench_shortlink "$work/data" "$PROXY_PORT" "$CONTROL_PORT" "$root/target/release/shortlink" \
  SHORTLINK_PROXY__THREADS="$THREADS" SHORTLINK_CONFIG="$work/shortlink.toml")
pids+=("$sl_pid")
sleep 0.3
bench_ready "$PROXY_PORT" || { cat "$work/data.log"; exit 1; }
"$root/target/release/load_seed" "http://127.0.0.1:$CONTROL_PORT" "$KEY" "$N"
sleep 1
status=$(curl -sk -o /dev/null -w '%{http_code} %{http_version}' --http2 "https://127.0.0.1:$TLS_PORT/ld$((N - 1))")
[ "$status" = "301 2" ] || { echo "sanity check failed: /ld$((N - 1)) over h2 answered $status"; exit 1; }

sed -e "s|@WORKERS@|$THREADS|" -e "s|@DIR@|$work|g" -e "s|@PORT@|$NGINX_PORT|" \
  "$root/benches/load/nginx-tls.conf.in" >"$work/nginx.conf"
nginx -p "$work" -c "$work/nginx.conf" -g 'daemon off;' &
pids+=("$!")
sleep 0.5
status=$(curl -sk -o /dev/null -w '%{http_code} %{http_version}' --http2 "https://127.0.0.1:$NGINX_PORT/ld1")
[ "$status" = "301 2" ] || { echo "sanity check failed: nginx over h2 answered $status"; exit 1; }

# Prints "<req/s> <non-3xx or failed count>" for one wrk run; $2 adds a header.
run_wrk() {
  local port=$1 out
  shift
  out=$(wrk -t"$WRK_THREADS" -c"$CONNS" -d"${SECS}s" "$@" -s "$root/benches/load/random_code.lua" \
    "https://127.0.0.1:$port" -- "$N" "")
  echo "$out" >>"$work/wrk.txt"
  echo "$out" | awk '/Requests\/sec/ { rps = $2 } /Non-2xx or 3xx/ { bad = $5 } /Socket errors/ { err = $4 + $6 + $8 + $10 }
    END { printf "%s %d\n", rps, bad + err }'
}

# Prints "<req/s> <failed count>" for one h2load run over 16 codes.
run_h2() {
  local port=$1 uris=() out
  for i in $(seq 0 15); do uris+=("https://127.0.0.1:$port/ld$((i * N / 16))"); done
  out=$(h2load -t"$WRK_THREADS" -c"$CONNS" -m10 -D"$SECS" "${uris[@]}" 2>&1)
  echo "$out" >>"$work/h2load.txt"
  echo "$out" | awk '/^finished in/ { rps = $4 } /^requests:/ { failed = $10 } END { printf "%s %d\n", rps, failed }'
}

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

for test in keepalive handshake h2; do : >"$work/$test-shortlink.runs"; : >"$work/$test-nginx.runs"; done
for round in $(seq "$ROUNDS"); do
  for server in shortlink nginx; do
    port=$TLS_PORT
    [ "$server" = nginx ] && port=$NGINX_PORT
    run_wrk "$port" | tee -a "$work/keepalive-$server.runs" | sed "s/^/round $round keepalive $server: /"
    run_wrk "$port" -H "Connection: close" | tee -a "$work/handshake-$server.runs" | sed "s/^/round $round handshake $server: /"
    run_h2 "$port" | tee -a "$work/h2-$server.runs" | sed "s/^/round $round h2 $server: /"
  done
done

echo
echo "links=$N rounds=$ROUNDS seconds=$SECS connections=$CONNS proxy_threads=$THREADS nginx_workers=$THREADS TLS 1.3, ECDSA P-256"
printf "%-10s %14s %14s %9s %s\n" test "shortlink_rps" "nginx_rps" "ratio" "(median per-round ratio; failed requests sl/nginx)"
for test in keepalive handshake h2; do
  sl=$(awk '{ print $1 }' "$work/$test-shortlink.runs" | median)
  ng=$(awk '{ print $1 }' "$work/$test-nginx.runs" | median)
  ratio=$(paste "$work/$test-shortlink.runs" "$work/$test-nginx.runs" | awk '{ print $1 / $3 }' | median)
  bad_sl=$(awk '{ s += $2 } END { print s + 0 }' "$work/$test-shortlink.runs")
  bad_ng=$(awk '{ s += $2 } END { print s + 0 }' "$work/$test-nginx.runs")
  printf "%-10s %14.0f %14.0f %9.3f %s/%s\n" "$test" "$sl" "$ng" "$ratio" "$bad_sl" "$bad_ng"
done
