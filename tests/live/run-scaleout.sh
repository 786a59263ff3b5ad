#!/usr/bin/env bash
# Scale-out live test: two Spike nodes (dataplane, control plane, BIRD) behind a
# router's ECMP with routes from BGP, a client and three flannel nodes, all in network
# namespaces (see tests/live/scaleout_test.py for the checks). Run as root;
# scripts/test.sh calls it after the live test. Builds the release binaries if cargo
# finds them missing or stale. Takes about a minute once built.
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --release --locked -p spike-dataplane -p spike-controlplane

workdir=out/scaleout-test
rm -rf "$workdir"
mkdir -p "$workdir"

source scripts/lab/common.sh
lab_run "spk$$-" tests/live/scaleout_test.py --workdir "$workdir"
