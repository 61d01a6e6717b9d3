#!/usr/bin/env bash
# A single Cassandra 5.0 node for the CQL-backed tests, from Maven Central.
#
#   scripts/cassandra.sh install   resolve cassandra-all and its jars into target/testinfra (cached)
#   scripts/cassandra.sh start     start the node on 127.0.0.1:9042 and wait until it accepts CQL
#   scripts/cassandra.sh stop      stop the node started by `start` (by PID)
#
# Needs JDK 17 (Cassandra 5.0 runs on 11 or 17 only) and Maven. Fails loudly, never skips.
set -euo pipefail
cd "$(dirname "$0")/.."

home="$PWD/target/testinfra/cassandra"
conf_src="$PWD/testinfra/cassandra"
java="${CASSANDRA_JAVA:-/usr/lib/jvm/java-17-openjdk-amd64/bin/java}"
port="${CASSANDRA_PORT:-9042}"

die() { echo "cassandra.sh: $*" >&2; exit 1; }

install() {
  if [ -f "$home/lib/.complete" ]; then return 0; fi
  command -v mvn >/dev/null 2>&1 || die "Maven (mvn) is missing: install it (apt-get install maven)"
  mkdir -p "$home/lib"
  echo "resolving Cassandra 5.0 from Maven Central into $home/lib (once; cached)"
  mvn -B -q -f "$conf_src/pom.xml" \
    org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$home/lib" \
    || die "could not resolve org.apache.cassandra:cassandra-all from Maven Central"
  touch "$home/lib/.complete"
}

running() { [ -f "$home/pid" ] && kill -0 "$(cat "$home/pid")" 2>/dev/null; }

start() {
  install
  [ -x "$java" ] || die "JDK 17 not found at $java (set CASSANDRA_JAVA, or apt-get install openjdk-17-jdk-headless)"
  if running; then echo "cassandra already running (pid $(cat "$home/pid"))"; return 0; fi
  # A fresh data folder each start: tests create their own keyspaces.
  rm -rf "$home/data" "$home/logs" "$home/conf"
  mkdir -p "$home/data" "$home/logs" "$home/conf"
  cp "$conf_src/cassandra.yaml" "$conf_src/logback.xml" "$home/conf/"
  sed -i "s/^native_transport_port: .*/native_transport_port: $port/" "$home/conf/cassandra.yaml"
  local jamm
  jamm=$(ls "$home"/lib/jamm-*.jar | head -n1)
  nohup "$java" @"$conf_src/jvm17.args" -javaagent:"$jamm" \
    -Dcassandra.config="file://$home/conf/cassandra.yaml" \
    -Dcassandra.storagedir="$home/data" -Dcassandra.logdir="$home/logs" \
    -Dlogback.configurationFile="$home/conf/logback.xml" \
    -Dcassandra-foreground=yes -Dcassandra.skip_wait_for_gossip_to_settle=0 \
    -Dcassandra.unsafesystem=true -Dcassandra.superuser_setup_delay_ms=0 \
    -cp "$home/conf:$home/lib/*" org.apache.cassandra.service.CassandraDaemon \
    >"$home/logs/stdout.log" 2>&1 &
  echo $! >"$home/pid"
  local waited=0
  until grep -q "Starting listening for CQL clients" "$home/logs/system.log" 2>/dev/null; do
    if ! running; then
      tail -n 40 "$home/logs/stdout.log" >&2 || true
      die "cassandra exited during startup (logs above, more in $home/logs)"
    fi
    if [ "$waited" -ge 180 ]; then
      stop
      die "cassandra did not accept CQL within 180 s (see $home/logs/system.log)"
    fi
    sleep 1
    waited=$((waited + 1))
  done
  echo "cassandra accepts CQL on 127.0.0.1:$port after ${waited}s (pid $(cat "$home/pid"))"
}

stop() {
  if running; then
    local pid
    pid=$(cat "$home/pid")
    kill "$pid"
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$home/pid"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) die "usage: scripts/cassandra.sh install|start|stop" ;;
esac
