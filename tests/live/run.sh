#!/usr/bin/env bash
# Live test: spike-dataplane on net_af_packet in network namespaces, between a client
# and three flannel nodes with real kernel VXLAN devices (see tests/live/live_test.py
# for the checks). Run as root; scripts/test.sh calls it after cargo test. Builds the
# release dataplane if cargo finds it missing or stale. Takes about 15 s once built.
#
# Environment:
#   SPIKE_LIVE_REQUESTS   connections in the load run (default 2000)
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --release --locked -p spike-dataplane

workdir=out/live-test
rm -rf "$workdir"
mkdir -p "$workdir"

source scripts/lab/common.sh
lab_run "spk$$-" tests/live/live_test.py --workdir "$workdir" \
    --requests "${SPIKE_LIVE_REQUESTS:-2000}"
