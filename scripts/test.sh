#!/usr/bin/env bash
# Installs what the tests need, then runs every check: formatting, clippy, unit,
# property and integration tests (real tshark, real DPDK with software ports), a live
# test in network namespaces and a short bounded fuzzing run. Run as root from
# anywhere in the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

export CARGO_TERM_COLOR=never
echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
echo "== live test: spike-dataplane between a client and flannel nodes in namespaces"
bash tests/live/run.sh
echo "== fuzz: the frame parser and decision on libFuzzer, bounded"
FUZZ_SECONDS="${FUZZ_SECONDS:-30}" bash scripts/fuzz.sh
