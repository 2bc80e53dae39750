#!/usr/bin/env bash
# Builds Ephemera, the baseline relay and the load generator in release mode, runs each
# scenario against each server in turn on this machine, and prints the ratios.
# Knobs (environment): PAIRS (1000), RUN_SECONDS (10), IDLE_SESSIONS (50000), CHURN_CONCURRENCY
# (200), SLOW_PAIRS (1000), SLOW_MIB (10). Results land in target/compare/*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=${PAIRS:-1000}
# Not SECONDS: bash's own counter of seconds since the shell started would always be set.
SECONDS_EACH=${RUN_SECONDS:-10}
IDLE_SESSIONS=${IDLE_SESSIONS:-50000}
CHURN_CONCURRENCY=${CHURN_CONCURRENCY:-200}
SLOW_PAIRS=${SLOW_PAIRS:-1000}
SLOW_MIB=${SLOW_MIB:-10}
out=target/compare
mkdir -p "$out"
ulimit -n "$(ulimit -Hn)" || true

cargo build --release --locked -p ephemera -p baseline-relay -p ephemera-loadgen
loadgen=target/release/ephemera-loadgen

start_ephemera() {
  target/release/ephemera --config ops/bench.toml --listen-addr 127.0.0.1:18181 --metrics-addr 127.0.0.1:0 \
    --log-level warn --max-sessions 200000 >"$out/ephemera.log" 2>&1 &
  pid=$!; url=ws://127.0.0.1:18181/ws; sleep 1
}
start_baseline() {
  target/release/baseline-relay 127.0.0.1:18191 >"$out/baseline.log" 2>&1 &
  pid=$!; url=ws://127.0.0.1:18191/ws; sleep 1
}
stop() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval('d'+sys.argv[2]))" "$@"; }

run() { # run NAME SERVER SCENARIO-ARGS...
  local name=$1 server=$2; shift 2
  "start_$server"
  "$loadgen" --url "$url" --server-pid "$pid" --source-addresses 256 \
    --json "$out/$name-$server.json" "$@" >/dev/null
  stop
}

echo "== chat: $PAIRS pairs, as fast as a window of 8 allows"
run chat-max baseline chat --pairs "$PAIRS" --duration-seconds "$SECONDS_EACH"
run chat-max ephemera chat --pairs "$PAIRS" --duration-seconds "$SECONDS_EACH"
base=$(field "$out/chat-max-baseline.json" "['delivered_per_second']")
ours=$(field "$out/chat-max-ephemera.json" "['delivered_per_second']")
echo "delivered/s  baseline $base  ephemera $ours  ratio $(python3 -c "print(round($ours/$base,2))")"

# The same offered load for both: 80% of what the slower of the two delivered.
rate=$(python3 -c "print(round(0.8*min($base,$ours)/($PAIRS*2), 2))")
echo "== chat at the same offered load: $rate msgs/s per member"
run chat-rate baseline chat --pairs "$PAIRS" --rate-per-member "$rate" --window 64 --duration-seconds "$SECONDS_EACH"
run chat-rate ephemera chat --pairs "$PAIRS" --rate-per-member "$rate" --window 64 --duration-seconds "$SECONDS_EACH"
bp99=$(field "$out/chat-rate-baseline.json" "['latency_p99_us']")
op99=$(field "$out/chat-rate-ephemera.json" "['latency_p99_us']")
echo "p99 µs       baseline $bp99  ephemera $op99  ratio $(python3 -c "print(round($op99/max($bp99,1),2))")"

echo "== idle: $IDLE_SESSIONS sessions"
if (( IDLE_SESSIONS + 100 > $(ulimit -Hn) )); then
  echo "note: this machine allows $(ulimit -Hn) open files per process; each session needs one" >&2
fi
run idle baseline idle --sessions "$IDLE_SESSIONS"
run idle ephemera idle --sessions "$IDLE_SESSIONS"
bidle=$(field "$out/idle-baseline.json" "['server_bytes_per_session']")
oidle=$(field "$out/idle-ephemera.json" "['server_bytes_per_session']")
echo "bytes/session baseline $bidle  ephemera $oidle  ratio $(python3 -c "print(round($oidle/$bidle,2))")"

echo "== churn: $CHURN_CONCURRENCY clients cycling"
run churn baseline churn --concurrency "$CHURN_CONCURRENCY" --duration-seconds "$SECONDS_EACH"
run churn ephemera churn --concurrency "$CHURN_CONCURRENCY" --duration-seconds "$SECONDS_EACH"
echo "matches/s    baseline $(field "$out/churn-baseline.json" "['matches_per_second']")  ephemera $(field "$out/churn-ephemera.json" "['matches_per_second']")"

echo "== slow: $SLOW_PAIRS non-reading clients, $SLOW_MIB MiB each (ephemera)"
run slow ephemera slow --pairs 100 --slow-pairs "$SLOW_PAIRS" \
  --slow-bytes-each $((SLOW_MIB << 20)) --duration-seconds "$SECONDS_EACH" || true
python3 - "$out/slow-ephemera.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
growth = (d["server_rss_peak_kib"] or 0) - (d["server_rss_before_kib"] or 0)
print(f"memory growth {growth/1024:.1f} MiB, cut off {d['slow_cut_off']}/{d['slow_pairs']}, "
      f"normal p99 ratio {d['p99_ratio_with_slow']:.2f}")
PY
