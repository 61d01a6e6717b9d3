#!/usr/bin/env bash
# A single Cassandra 5.0 node for the CQL-backed tests, from Maven Central.
#
#   scripts/cassandra.sh install   resolve cassandra-all and its jars into target/testinfra (cached)
#   scripts/cassandra.sh start     start the node on 127.0.0.1:9042 and wait until it accepts CQL
#   scripts/cassandra.sh stop      stop the node started by `start` (by PID)
#
#   scripts/cassandra.sh cluster-start       three nodes on 127.0.0.2-4:9042 in datacenter dc1
#                                            (for replication factor 3), started one after another
#   scripts/cassandra.sh cluster-stop        stop all three
#   scripts/cassandra.sh node-kill N         SIGKILL node N (2, 3 or 4)
#   scripts/cassandra.sh node-start N        start node N again on its data (after a kill)
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

# --- the three-node cluster -------------------------------------------------------------

cluster="$PWD/target/testinfra/cassandra-cluster"
node_dir() { echo "$cluster/node$1"; }
node_running() { [ -f "$(node_dir "$1")/pid" ] && kill -0 "$(cat "$(node_dir "$1")/pid")" 2>/dev/null; }

# Starts node N (127.0.0.N) on its folder; `fresh` wipes the folder first. Unlike the
# single node, system tables are written durably: a killed node must come back knowing the
# keyspaces created before it died.
node_start() {
  local n="$1" fresh="${2:-}" dir
  dir=$(node_dir "$n")
  if node_running "$n"; then echo "node $n already running"; return 0; fi
  if [ "$fresh" = fresh ]; then rm -rf "$dir"; fi
  mkdir -p "$dir/data" "$dir/logs" "$dir/conf"
  cp "$conf_src/cassandra.yaml" "$conf_src/logback.xml" "$dir/conf/"
  sed -i -e "s/^cluster_name: .*/cluster_name: shortlink-cluster/" \
    -e "s/^listen_address: .*/listen_address: 127.0.0.$n/" \
    -e "s/^rpc_address: .*/rpc_address: 127.0.0.$n/" \
    -e "s/seeds: \"127.0.0.1:7000\"/seeds: \"127.0.0.2:7000\"/" \
    -e "s/^native_transport_port: .*/native_transport_port: 9042/" \
    -e "s/^hinted_handoff_enabled: .*/hinted_handoff_enabled: true/" \
    -e "s/^endpoint_snitch: .*/endpoint_snitch: GossipingPropertyFileSnitch/" \
    "$dir/conf/cassandra.yaml"
  # One datacenter named as configs/cluster.toml names it.
  printf 'dc=dc1\nrack=rack1\n' >"$dir/conf/cassandra-rackdc.properties"
  : >"$dir/logs/system.log"
  local jamm
  jamm=$(ls "$home"/lib/jamm-*.jar | head -n1)
  nohup "$java" @"$conf_src/jvm17.args" -Xms512M -Xmx512M -javaagent:"$jamm" \
    -Dcassandra.config="file://$dir/conf/cassandra.yaml" \
    -Dcassandra.storagedir="$dir/data" -Dcassandra.logdir="$dir/logs" \
    -Dlogback.configurationFile="$dir/conf/logback.xml" \
    -Dcassandra.jmx.local.port=$((7190 + n)) \
    -Dcassandra-foreground=yes -Dcassandra.skip_wait_for_gossip_to_settle=0 \
    -Dcassandra.ring_delay_ms=5000 -Dcassandra.superuser_setup_delay_ms=0 \
    -cp "$dir/conf:$home/lib/*" org.apache.cassandra.service.CassandraDaemon \
    >"$dir/logs/stdout.log" 2>&1 &
  echo $! >"$dir/pid"
  local waited=0
  until grep -q "Starting listening for CQL clients" "$dir/logs/system.log" 2>/dev/null; do
    if ! node_running "$n"; then
      tail -n 40 "$dir/logs/stdout.log" >&2 || true
      die "node $n exited during startup (logs above, more in $dir/logs)"
    fi
    if [ "$waited" -ge 240 ]; then
      die "node $n did not accept CQL within 240 s (see $dir/logs/system.log)"
    fi
    sleep 1
    waited=$((waited + 1))
  done
  echo "node $n accepts CQL on 127.0.0.$n:9042 after ${waited}s (pid $(cat "$dir/pid"))"
}

node_stop() {
  local n="$1" signal="${2:-TERM}" dir pid
  dir=$(node_dir "$n")
  if node_running "$n"; then
    pid=$(cat "$dir/pid")
    kill -"$signal" "$pid"
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/pid"
}

cluster_start() {
  install
  [ -x "$java" ] || die "JDK 17 not found at $java (set CASSANDRA_JAVA, or apt-get install openjdk-17-jdk-headless)"
  # Nodes join one at a time, the seed first.
  for n in 2 3 4; do node_start "$n" fresh; done
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  cluster-start) cluster_start ;;
  cluster-stop) for n in 2 3 4; do node_stop "$n"; done ;;
  node-kill) node_stop "${2:?node number}" KILL ;;
  node-start) install; node_start "${2:?node number}" ;;
  *) die "usage: scripts/cassandra.sh install|start|stop|cluster-start|cluster-stop|node-kill N|node-start N" ;;
esac
