#!/usr/bin/env bash
# The project's test command (README, CI): installs what the build and tests need,
# idempotently, then checks formatting and lints and runs every test against the real
# binary over real sockets.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# pingora always builds zlib-ng, which needs cmake.
if ! command -v cmake >/dev/null 2>&1; then
  log "installing cmake (needed by pingora's zlib-ng build)"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq cmake >/dev/null
  else
    echo "cmake is missing and this script is not root: install it with 'sudo apt-get install cmake'" >&2
    exit 1
  fi
fi

# curl is the real HTTP/1.1 and HTTP/2 client the TLS tests drive (tests/tls.rs).
if ! command -v curl >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    log "installing curl (the HTTP/2 client of the TLS tests)"
    apt-get update -qq && apt-get install -y -qq curl >/dev/null
  else
    echo "the TLS tests need curl: sudo apt-get install curl" >&2
    exit 1
  fi
fi

# A real S3-compatible server for the upload tests: s3s-fs from crates.io, built once into
# target/testinfra (0.14.1: newer releases need a newer rustc than this toolchain's 1.95).
s3s="$PWD/target/testinfra/s3s/bin/s3s-fs"
if [ ! -x "$s3s" ]; then
  log "installing s3s-fs 0.14.1 (the S3 server the upload tests run against)"
  cargo install s3s-fs@0.14.1 --locked --features binary --root target/testinfra/s3s
fi
export S3S_FS_BIN="$s3s"

# A real CQL server for the distributed backend's conformance suite and the cluster tests:
# Cassandra 5.0 from Maven Central (cached in target/testinfra), one node on 127.0.0.1,
# stopped when this script exits. Failing to install or start it fails the run.
if ! command -v mvn >/dev/null 2>&1 || ! [ -x "${CASSANDRA_JAVA:-/usr/lib/jvm/java-17-openjdk-amd64/bin/java}" ]; then
  if [ "$(id -u)" = 0 ]; then
    log "installing Maven and JDK 17 (Cassandra 5.0 runs on 11 or 17)"
    apt-get update -qq && apt-get install -y -qq maven openjdk-17-jdk-headless >/dev/null
  else
    echo "Cassandra needs Maven and JDK 17: sudo apt-get install maven openjdk-17-jdk-headless" >&2
    exit 1
  fi
fi
log "starting Cassandra 5.0 (the CQL server the cluster tests run against)"
trap 'scripts/cassandra.sh stop' EXIT
scripts/cassandra.sh start
export CQL_TEST_NODES="127.0.0.1:${CASSANDRA_PORT:-9042}"

# A real browser for the web page's tests: Debian's chromium, driven by playwright-core
# from the npm registry (installed into tests/browser/node_modules, cached).
if ! [ -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
  if [ "$(id -u)" = 0 ]; then
    log "installing chromium (the browser the web page's tests drive)"
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  else
    echo "the browser tests need chromium: sudo apt-get install chromium" >&2
    exit 1
  fi
fi
command -v node >/dev/null 2>&1 || { echo "the browser tests need Node.js 18 or later (apt-get install nodejs npm)" >&2; exit 1; }
# npm packages as their lock files say (installed again only when a lock file changed).
npm_ci() {
  local dir=$1 stamp="$1/node_modules/.lock-sha256"
  local want
  want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing $dir's packages from the npm registry"
    (cd "$dir" && npm ci --no-audit --no-fund)
    echo "$want" >"$stamp"
  fi
}
npm_ci tests/browser   # playwright-core, axe-core, esbuild, react

# The JavaScript client (clients/js): its committed build must be what its sources and
# the committed OpenAPI document make (tests/openapi.rs holds that document to the
# served one), so `cargo build` and the page never need Node. Built into a scratch
# folder and compared; its type tests compiled.
npm_ci clients/js
log "clients/js: the committed build is current"
js_out=$(mktemp -d)
(
  cd clients/js
  npx --no-install openapi-typescript openapi.json --output "$js_out/schema.ts" >/dev/null
  cmp -s "$js_out/schema.ts" src/schema.ts || { echo "clients/js/src/schema.ts is stale: run 'npm run build' in clients/js and commit" >&2; exit 1; }
  npx --no-install tsc -p tsconfig.json --outDir "$js_out/dist"
  diff -r "$js_out/dist" dist >/dev/null || { diff -r "$js_out/dist" dist | head -20 >&2; echo "clients/js/dist is stale: run 'npm run build' in clients/js and commit" >&2; exit 1; }
  npx --no-install tsc -p test/tsconfig.json
)
rm -rf "$js_out"

# Schemathesis (from PyPI, into a virtual environment in target/testinfra, cached), which
# tests/openapi.rs runs against the real binary over the served OpenAPI document.
schemathesis="$PWD/target/testinfra/schemathesis/bin/schemathesis"
if ! [ -x "$schemathesis" ] || ! "$schemathesis" --version 2>/dev/null | grep -q 4.32.5; then
  log "installing Schemathesis 4.32.5 from PyPI into target/testinfra/schemathesis"
  python3 -m venv target/testinfra/schemathesis
  target/testinfra/schemathesis/bin/pip install -q schemathesis==4.32.5
fi
export SCHEMATHESIS_BIN="$schemathesis"

# A real ACME server for the automatic-certificate tests (tests/acme.rs, tests/cluster.rs):
# Pebble and its challenge test server (the DNS server Pebble resolves names with), built
# from the Go module proxy into target/testinfra (cached); each test starts its own pair.
pebble_dir="$PWD/target/testinfra/pebble/bin"
if ! [ -x "$pebble_dir/pebble" ] || ! [ -x "$pebble_dir/pebble-challtestsrv" ]; then
  if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
    export PATH="$PATH:/usr/local/go/bin"
  fi
  if ! command -v go >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      log "installing Go (to build Pebble, the ACME server the certificate tests run against)"
      apt-get update -qq && apt-get install -y -qq golang-go >/dev/null
    else
      echo "the ACME tests need Go to build Pebble: sudo apt-get install golang-go" >&2
      exit 1
    fi
  fi
  log "installing Pebble v2.10.3 and pebble-challtestsrv from the Go module proxy"
  GOBIN="$pebble_dir" go install \
    github.com/letsencrypt/pebble/v2/cmd/pebble@v2.10.3 \
    github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv@v2.10.3
fi
export PEBBLE_BIN="$pebble_dir/pebble" PEBBLE_CHALLTESTSRV_BIN="$pebble_dir/pebble-challtestsrv"

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo test"
# Library, binary and integration tests (the crates have no doc tests); the output is kept
# to print one closing total.
out=$(mktemp)
trap 'rm -f "$out"; scripts/cassandra.sh stop' EXIT
set +e
cargo test --workspace --locked --lib --bins --tests 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
set -e
passed=$(awk '/^test result:/ { s += $4 } END { print s + 0 }' "$out")
failed=$(awk '/^test result:/ { s += $6 } END { print s + 0 }' "$out")
if [ "$status" -eq 0 ]; then
  # The cluster under a fault (tests/cluster_faults.rs): three Cassandra nodes on
  # 127.0.0.2-4 in place of the single one, one of them killed and restarted mid-test.
  log "cargo test --test cluster_faults (three Cassandra nodes)"
  scripts/cassandra.sh stop
  trap 'rm -f "$out"; scripts/cassandra.sh cluster-stop' EXIT
  scripts/cassandra.sh cluster-start
  set +e
  CQL_CLUSTER_NODES=127.0.0.2:9042,127.0.0.3:9042,127.0.0.4:9042 \
    cargo test --locked --test cluster_faults 2>&1 | tee -a "$out"
  status=${PIPESTATUS[0]}
  set -e
  passed=$(awk '/^test result:/ { s += $4 } END { print s + 0 }' "$out")
  failed=$(awk '/^test result:/ { s += $6 } END { print s + 0 }' "$out")
fi
echo
echo "$passed passed, $failed failed"
if [ "$status" -ne 0 ]; then
  exit "$status"
fi
if [ "$passed" -eq 0 ]; then
  echo "no test ran" >&2
  exit 1
fi
