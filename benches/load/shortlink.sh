# Sourced by the bench scripts: how they start a `shortlink serve` to load.
#
# The admin key the benches seed links with.
KEY=sl_load_harness_admin_key_0000000000

# bench_shortlink DIR PROXY_PORT CONTROL_PORT BINARY [SETTING=value ...]
# Starts BINARY serve in the background with its data in DIR and its output in DIR.out and
# DIR.log, on loopback, with no shutdown grace and no write limits (seeding is not rate
# limited), then the given settings; prints its pid.
bench_shortlink() {
  local dir=$1 proxy_port=$2 control_port=$3 binary=$4
  shift 4
  env SHORTLINK_DATA_DIR="$dir" \
    SHORTLINK_PROXY_LISTEN="127.0.0.1:$proxy_port" \
    SHORTLINK_CONTROL_LISTEN="127.0.0.1:$control_port" \
    SHORTLINK_ADMIN_KEY=$KEY \
    SHORTLINK_PROXY__GRACE_PERIOD_SECONDS=0 \
    SHORTLINK_CONTROL__WRITES_PER_MINUTE=100000000 \
    SHORTLINK_CONTROL__WRITE_BURST=100000000 \
    SHORTLINK_LOG=warn \
    "$@" "$binary" serve >"$dir.out" 2>"$dir.log" &
  echo $!
}

# bench_ready PROXY_PORT: waits up to 10 s for the proxy's /readyz; fails if it never answers.
bench_ready() {
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$1/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "shortlink on :$1 did not become ready" >&2
  return 1
}
