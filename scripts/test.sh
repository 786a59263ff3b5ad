#!/usr/bin/env bash
# Installs what the tests need, then runs every check: formatting, clippy, unit,
# property and integration tests (real tshark, real DPDK with software ports), a live
# test in network namespaces and a short bounded fuzzing run. Last, it builds, lints,
# installs and purges the Debian packages. Run as root from anywhere in the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

export CARGO_TERM_COLOR=never
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked 2>&1 | tee "$logs/cargo-test.log"
echo "== live test: spike-dataplane between a client and flannel nodes in namespaces"
bash tests/live/run.sh 2>&1 | tee "$logs/live-test.log"
echo "== fuzz: the frame parser and decision on libFuzzer, bounded"
FUZZ_SECONDS="${FUZZ_SECONDS:-30}" bash scripts/fuzz.sh
echo "== packaging: build, lintian, install, verify and purge the Debian packages"
bash tests/packaging/run.sh 2>&1 | tee "$logs/packaging-test.log"

# One closing line for all suites; any failure has already stopped the script.
cargo_passed=$(grep -Eo 'test result: ok\. [0-9]+ passed' "$logs/cargo-test.log" |
    awk '{ total += $4 } END { print total + 0 }')
# The live runner prints one total per scene.
live_passed=$(grep -Eo '^[0-9]+ passed, 0 failed$' "$logs/live-test.log" |
    awk '{ total += $1 } END { print total + 0 }')
packaging_passed=$(grep -Eo '^[0-9]+ passed, 0 failed$' "$logs/packaging-test.log" |
    awk '{ print $1 }')
echo "cargo tests: $cargo_passed, live checks: ${live_passed:-0}, fuzzing: 1 run," \
    "packaging checks: ${packaging_passed:-0}"
echo "total: $((cargo_passed + ${live_passed:-0} + 1 + ${packaging_passed:-0})) passed, 0 failed"
