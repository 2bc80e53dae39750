#!/bin/bash
# The load generator's chat scenario against three nodes on one Redis behind HAProxy
# (ops/haproxy.cfg), then against one node alone, on this machine, one after the other.
# Needs redis-server, redis-cli and haproxy, and release builds of the server and the load
# generator (cargo build --release --bin ephemera -p ephemera-loadgen).
# BENCHMARKS.md "Several nodes" has its results and what they mean.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
B=$REPO/target/release/ephemera
L=$REPO/target/release/ephemera-loadgen
CFG=$REPO/ops/bench.toml
for bin in "$B" "$L"; do
  [[ -x $bin ]] || { echo "missing $bin: cargo build --release --bin ephemera -p ephemera-loadgen" >&2; exit 1; }
done
WORK=$(mktemp -d)
# shellcheck disable=SC2317 # called by the trap
cleanup() {
  jobs -p | xargs -r kill 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"
SECRET=$(printf 'ab%.0s' $(seq 32))
redis-server --port 16379 --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
RP=$!
sleep 0.5
PIDS=()
for p in 18081 18082 18083; do
  EPHEMERA_CLUSTER_REDIS_URL=redis://127.0.0.1:16379/ EPHEMERA_CLUSTER_SECRET=$SECRET $B --config "$CFG" --listen-addr 127.0.0.1:$p --metrics-addr 127.0.0.1:0 --trusted-proxies 127.0.0.1 --log-level error >/dev/null 2>&1 &
  PIDS+=($!)
done
sed -e 's/127.0.0.1:8000/127.0.0.1:18000/' -e 's/127.0.0.1:8081/127.0.0.1:18081/' -e 's/127.0.0.1:8082/127.0.0.1:18082/' -e 's/127.0.0.1:8083/127.0.0.1:18083/' "$REPO"/ops/haproxy.cfg > h.cfg
haproxy -db -f h.cfg >/dev/null 2>&1 &
HP=$!
sleep 2
redis-cli -p 16379 info commandstats | grep -E "cmdstat_(xadd|xread|evalsha|eval|xdel|set|get|pexpire)" > before.txt || true
echo "== three nodes behind HAProxy"
$L --url ws://127.0.0.1:18000/ws --json three.json chat --pairs 200 --duration-seconds 15 | tail -15
redis-cli -p 16379 info commandstats | grep -E "cmdstat_(xadd|xread|evalsha|eval|xdel|set|get|pexpire)" > after.txt || true
echo "== Redis commands during the three-node run (calls before, then after)"
paste -d' ' <(cut -d, -f1 before.txt) <(cut -d, -f1 after.txt) || true
kill "$HP" "${PIDS[@]}" "$RP" 2>/dev/null; wait 2>/dev/null || true
echo "== one node"
$B --config "$CFG" --listen-addr 127.0.0.1:18091 --metrics-addr 127.0.0.1:0 --log-level error >/dev/null 2>&1 &
OP=$!
sleep 1
$L --url ws://127.0.0.1:18091/ws --json one.json chat --pairs 200 --duration-seconds 15 | tail -15
kill $OP; wait 2>/dev/null || true
