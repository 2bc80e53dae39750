#!/bin/bash
# The load generator's idle scenario against three nodes on one Redis, on this machine: SESSIONS
# (default 50,000) split evenly over the nodes, half of them chatting (pairs may match across
# nodes, through Redis), held HOLD_SECONDS. One load generator process per node, connecting
# straight to its node (HAProxy would need two descriptors per connection), so that no process
# needs more files than the hard limit allows. Reports each node's memory per session and what
# Redis holds while the sessions are held; then runs one node alone with one node's share, to
# compare. Knobs (environment): SESSIONS (50000), CHATTING_SHARE (0.5), HOLD_SECONDS (60).
# Needs redis-server, redis-cli, curl and jq, and release builds of ephemera and the load
# generator (cargo build --release; cargo build --release -p ephemera-loadgen).
# BENCHMARKS.md "Several nodes" has its results.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
B=$REPO/target/release/ephemera
L=$REPO/target/release/ephemera-loadgen
CFG=$REPO/ops/bench.toml
SESSIONS=${SESSIONS:-50000}
CHATTING_SHARE=${CHATTING_SHARE:-0.5}
HOLD_SECONDS=${HOLD_SECONDS:-60}
# Two settings lifted for a flood of connections on two busy cores (memory per session does
# not depend on them): the idle scenario reads nothing, so answers no ping, until all of its
# process's sessions are up, which can take longer than client_timeout_seconds (45), and the
# nodes would drop the first sessions as silent; and an upgrade request the node has not read
# within http_request_timeout_seconds (10) gets a 408, so the session never starts.
CLIENT_TIMEOUT_SECONDS=${CLIENT_TIMEOUT_SECONDS:-600}
HTTP_REQUEST_TIMEOUT_SECONDS=${HTTP_REQUEST_TIMEOUT_SECONDS:-120}
REDIS_PORT=${REDIS_PORT:-16379}
PORTS=(18181 18182 18183)
METRICS_PORTS=(19181 19182 19183)

ulimit -n "$(ulimit -Hn)"
LIMIT=$(ulimit -n)
PER_NODE=$(( (SESSIONS + 2) / 3 ))
# A node needs one file per session, plus its listeners, Redis connections and the like.
if (( PER_NODE + 200 > LIMIT )); then
  echo "$PER_NODE sessions per node do not fit the open-file limit of $LIMIT" >&2
  exit 1
fi
for bin in "$B" "$L"; do
  [[ -x $bin ]] || { echo "missing $bin: build it first" >&2; exit 1; }
done

WORK=$(mktemp -d)
cd "$WORK"
PIDS=()
# shellcheck disable=SC2317 # called by the trap
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

SECRET=$(printf 'ab%.0s' $(seq 32))
R() { redis-cli -p "$REDIS_PORT" "$@"; }
used_memory() { R info memory | tr -d '\r' | sed -n 's/^used_memory://p'; }
stats() { curl -sf "http://127.0.0.1:$1/stats"; }

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do R ping >/dev/null 2>&1 && break; sleep 0.1; done
NODES=()
for i in 0 1 2; do
  p=${PORTS[$i]}
  EPHEMERA_CLUSTER_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/ EPHEMERA_CLUSTER_SECRET=$SECRET \
    "$B" --config "$CFG" --listen-addr "127.0.0.1:$p" --metrics-addr "127.0.0.1:${METRICS_PORTS[$i]}" \
    --client-timeout-seconds "$CLIENT_TIMEOUT_SECONDS" \
    --http-request-timeout-seconds "$HTTP_REQUEST_TIMEOUT_SECONDS" --log-level error >"node-$p.log" 2>&1 &
  PIDS+=($!)
  NODES+=($!)
done
for p in "${PORTS[@]}"; do
  for _ in $(seq 100); do stats "$p" >/dev/null && break; sleep 0.1; done
done
sleep 2
# The kernel's counts of connections that had to wait (full accept queue, SYN sent again).
tcp_counts() { nstat -az 2>/dev/null | awk '$1 ~ /ListenOverflows|TCPSynRetrans/ {print $1, $2}'; }
tcp_counts >tcp-before.txt || true
REDIS_BEFORE=$(used_memory)
KEYS_BEFORE=$(R dbsize)

echo "== $SESSIONS idle sessions ($CHATTING_SHARE chatting) over three nodes, ${HOLD_SECONDS} s held"
LOADGENS=()
left=$SESSIONS
for i in 0 1 2; do
  n=$(( i == 2 ? left : PER_NODE ))
  left=$(( left - n ))
  "$L" --url "ws://127.0.0.1:${PORTS[$i]}/ws" --server-pid "${NODES[$i]}" --json "node-$i.json" \
    idle --sessions "$n" --chatting-share "$CHATTING_SHARE" --hold-seconds "$HOLD_SECONDS" \
    >"loadgen-$i.log" 2>&1 &
  PIDS+=($!)
  LOADGENS+=($!)
done

# While the load generators run: the most sessions online at once, and Redis at the most
# online seen on both sides of its reading (so once all are up, the state just before the
# first generator lets go).
running() {
  for pid in "${LOADGENS[@]}"; do kill -0 "$pid" 2>/dev/null && return 0; done
  return 1
}
ONLINE=0
LINE=""
poll_nodes() {
  ONLINE=0
  LINE=""
  local p s
  for p in "${PORTS[@]}"; do
    s=$(stats "$p" || echo '{}')
    ONLINE=$(( ONLINE + $(jq '.online // 0' <<<"$s") ))
    LINE+=" $(jq -r '"\(.online // "?") (cluster \(.cluster.online // "?"))"' <<<"$s")"
  done
}
PEAK=0
SNAPSHOT=0
NODES_AT_PEAK=""
REDIS_AT_PEAK=0
KEYS_AT_PEAK=0
while running; do
  poll_nodes
  online=$ONLINE
  line=$LINE
  (( online <= PEAK )) || PEAK=$online
  if (( online > 0 && online >= SNAPSHOT )); then
    memory=$(used_memory)
    keys=$(R dbsize)
    if (( online == SESSIONS )); then
      # What the keys are, by prefix (eph:resume, eph:cool, ...).
      R --scan --pattern 'eph:*' | sort -u | cut -d: -f1-2 | uniq -c >keys-now.txt
    fi
    poll_nodes
    if (( ONLINE >= online )); then
      SNAPSHOT=$online
      NODES_AT_PEAK=$line
      REDIS_AT_PEAK=$memory
      KEYS_AT_PEAK=$keys
      [[ -s keys-now.txt ]] && mv keys-now.txt keys.txt
    fi
    rm -f keys-now.txt
  fi
  sleep 2
done
STATUS=0
for pid in "${LOADGENS[@]}"; do wait "$pid" || STATUS=$?; done
for i in 0 1 2; do
  if [[ ! -s node-$i.json ]]; then
    echo "load generator $i failed:" >&2
    tail -5 "loadgen-$i.log" >&2
    exit 1
  fi
done
# Keys left once the nodes have ended every session (what outlives a session): the count
# once it has stopped falling for 6 s, or after a minute.
KEYS_AFTER=$(R dbsize)
still=0
for _ in $(seq 30); do
  sleep 2
  k=$(R dbsize)
  if (( k < KEYS_AFTER )); then still=0; else still=$(( still + 1 )); fi
  KEYS_AFTER=$k
  (( still < 3 )) || break
done
R --scan --pattern 'eph:*' | sort -u | cut -d: -f1-2 | uniq -c >keys-left.txt
COMMANDS=$(R info commandstats | tr -d '\r' |
  sed -n 's/^cmdstat_\([a-z]*\):calls=\([0-9]*\),.*/\1 \2/p' | grep -v -E '^(scan|info|dbsize|ping) ' |
  sort -k2 -rn | head -8 | tr '\n' ' ')
tcp_counts >tcp-after.txt || true

printf '%-6s %9s %9s %15s %14s %17s\n' node sessions connected "RSS before KiB" "RSS after KiB" "bytes/session"
jq -rs '
  (map(.server_rss_after_kib - .server_rss_before_kib) | add) as $growth
  | (map(.connected) | add) as $connected
  | (to_entries[] | [.key + 1, .value.sessions, .value.connected, .value.server_rss_before_kib,
      .value.server_rss_after_kib, (.value.server_bytes_per_session | round)] | @tsv),
    (["total", (map(.sessions) | add), $connected, (map(.server_rss_before_kib) | add),
      (map(.server_rss_after_kib) | add), ($growth * 1024 / $connected | round)] | @tsv)
' node-0.json node-1.json node-2.json | while IFS=$'\t' read -r a b c d e f; do
  printf '%-6s %9s %9s %15s %14s %17s\n' "$a" "$b" "$c" "$d" "$e" "$f"
done
CONNECTED=$(jq -s 'map(.connected) | add' node-0.json node-1.json node-2.json)
if (( CONNECTED < SESSIONS )); then
  echo "$(( SESSIONS - CONNECTED )) sessions not held: the load generator gave up on them" \
    "(30 s for hello, 60 s for a match); see the nodes' metrics below"
fi
# /stats counts sessions in their resume grace too.
echo "most sessions online at once: $PEAK of $SESSIONS"
echo "Redis read at $SNAPSHOT online; nodes' /stats online (cluster online) then:$NODES_AT_PEAK"
echo "Redis used_memory: $REDIS_BEFORE bytes before, $REDIS_AT_PEAK then" \
  "($(( (REDIS_AT_PEAK - REDIS_BEFORE) / (SNAPSHOT > 0 ? SNAPSHOT : 1) )) bytes per session)"
echo "Redis keys: $KEYS_BEFORE before, $KEYS_AT_PEAK then, $KEYS_AFTER once the sessions had ended"
if [[ -s keys.txt ]]; then
  echo "Redis keys then, by prefix:"
  sort -rn keys.txt
fi
echo "Redis keys once the sessions had ended, by prefix:"
sort -rn keys-left.txt
echo "Redis commands over the run (calls): $COMMANDS"
# Anything refused or cut off, per node, and the kernel's counts of waiting connections.
for i in 0 1 2; do
  m=$(curl -sf "http://127.0.0.1:${METRICS_PORTS[$i]}/metrics" |
    grep -E '^ephemera_(errors_sent|refusals|disconnects)_total|^ephemera_sessions_started_total|^ephemera_matches_total' |
    grep -v '} 0$' | tr '\n' ' ' || true)
  echo "node $(( i + 1 )) metrics: $m"
done
echo "kernel (this network namespace, anyone's connections):" \
  "$(join tcp-before.txt tcp-after.txt 2>/dev/null | awk '{printf "%s %d  ", $1, $3 - $2}' || true)"
if grep -qi -E "panic|error" node-*.log; then
  echo "node logs:"
  grep -i -E "panic|error" node-*.log | sort | uniq -c | sort -rn | head -10
fi

# The same load on one node alone (no Redis), to compare memory per session.
for pid in "${NODES[@]}"; do kill "$pid" 2>/dev/null || true; done
for pid in "${NODES[@]}"; do wait "$pid" 2>/dev/null || true; done
echo "== one node alone, $PER_NODE sessions, same settings"
"$B" --config "$CFG" --listen-addr 127.0.0.1:18191 --metrics-addr 127.0.0.1:19191 \
  --client-timeout-seconds "$CLIENT_TIMEOUT_SECONDS" \
  --http-request-timeout-seconds "$HTTP_REQUEST_TIMEOUT_SECONDS" --log-level error >node-alone.log 2>&1 &
ALONE=$!
PIDS+=("$ALONE")
for _ in $(seq 100); do stats 18191 >/dev/null && break; sleep 0.1; done
sleep 2
"$L" --url ws://127.0.0.1:18191/ws --server-pid "$ALONE" --json alone.json idle \
  --sessions "$PER_NODE" --chatting-share "$CHATTING_SHARE" --hold-seconds "$HOLD_SECONDS" \
  >loadgen-alone.log 2>&1 || STATUS=$?
jq -r '"sessions \(.sessions), connected \(.connected), RSS \(.server_rss_before_kib) KiB before," +
  " \(.server_rss_after_kib) KiB after, \(.server_bytes_per_session | round) bytes per session"' alone.json
exit "$STATUS"
