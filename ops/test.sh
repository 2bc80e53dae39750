#!/usr/bin/env bash
# The project's one test command (README's "test it"; .ci/run calls exactly this).
# Installs what it needs, then checks formatting and lints and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Rust 1.85 or newer (Cargo.toml's rust-version). Distributions often ship older compilers, so a
# machine without one (or with an older one) gets the stable toolchain from rustup.
rust_is_recent() {
  command -v cargo >/dev/null 2>&1 || return 1
  local version
  version=$(rustc --version 2>/dev/null | awk '{ print $2 }')
  [ "$(printf '%s\n1.85.0\n' "$version" | sort -V | head -n1)" = "1.85.0" ]
}
if ! rust_is_recent && [ -f "$HOME/.cargo/env" ]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
if ! rust_is_recent; then
  if ! command -v curl >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq curl ca-certificates >/dev/null
  fi
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
    sh -s -- -y --profile minimal --component rustfmt,clippy >/dev/null
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
# gdb's gcore dumps the live server in the test that proves nothing of a chat is left behind;
# Debian's Chromium runs the browser tests (never a browser download); coturn is the real TURN
# server of the relay-only video tests; node runs both the page's unit and browser tests;
# mosquitto is the real MQTT broker the statistics publisher is tested against; prometheus
# (with promtool) checks the scrape config, the alert rules and the dashboards' queries;
# redis-server (run by the tests with persistence off) and HAProxy (running ops/haproxy.cfg)
# carry the cluster tests.
missing=()
command -v gcore >/dev/null 2>&1 || missing+=(gdb)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v turnserver >/dev/null 2>&1 || missing+=(coturn)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
if ((${#missing[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo build --release (the memory-dump test runs the release server)"
cargo build --release --locked --bin ephemera
export EPHEMERA_TEST_BINARY="${CARGO_TARGET_DIR:-$PWD/target}/release/ephemera"
# Every suite runs even when one fails, so the closing line counts every failure; the command
# fails at the end if any did.
status=0
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log" || status=1
echo "== web page: unit tests (node --test) and browser tests (Chromium, playwright-core)"
(cd tests/web && npm ci --no-audit --no-fund --loglevel=error)
node --test tests/web/unit/*.test.mjs 2>&1 | tee -a "$log" || status=1
node --test --test-concurrency=1 tests/web/browser/*.test.mjs 2>&1 | tee -a "$log" || status=1
# One closing line over every test binary, so the total is what a reader sees last.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     /^# pass [0-9]+$/ { p += $3 }
     /^# fail [0-9]+$/ { f += $3 }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
