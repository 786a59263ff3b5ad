#!/usr/bin/env bash
# Scale-out live test: two Spike nodes (dataplane, control plane, BIRD) behind a
# router's ECMP with routes from BGP, a client and three flannel nodes, all in network
# namespaces (see tests/live/scaleout_test.py for the checks). Run as root;
# tests/live/run.sh calls it after its other scenes. Builds the release dataplane and
# the debug control plane if cargo finds them missing or stale: the control plane is
# off the packet path, and cargo test has built its debug binary already. Takes about
# 30 s once built.
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --release --locked -p spike-dataplane
cargo build --locked -p spike-controlplane
export SPIKE_CONTROLPLANE="$PWD/target/debug/spike-controlplane"

workdir=out/scaleout-test
rm -rf "$workdir"
mkdir -p "$workdir"

source scripts/lab/common.sh
lab_run "spk$$-" tests/live/scaleout_test.py --workdir "$workdir"
