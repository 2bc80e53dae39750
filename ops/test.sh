#!/usr/bin/env bash
# The project's one test command (README's "test it"; .ci/run calls exactly this).
# Installs what it needs, then checks formatting and lints and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  # A machine without Rust: install the toolchain from the distribution.
  if command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq cargo rustc rustfmt >/dev/null
  else
    echo "cargo is required (https://rustup.rs)" >&2
    exit 1
  fi
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
# gdb's gcore dumps the live server in the test that proves nothing of a chat is left behind.
if ! command -v gcore >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gdb >/dev/null
fi

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo build --release (the memory-dump test runs the release server)"
cargo build --release --locked --bin ephemera
export EPHEMERA_TEST_BINARY="$PWD/target/release/ephemera"
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# One closing line over every test binary, so the total is what a reader sees last.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
