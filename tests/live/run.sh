#!/usr/bin/env bash
# Live test: spike-dataplane on net_af_packet in network namespaces, between a client
# and three flannel nodes with real kernel VXLAN devices (see tests/live/live_test.py
# for the checks), then two dataplanes that share the fragments of UDP datagrams
# (tests/live/fragments_test.py), then two Spike nodes behind BGP ECMP
# (tests/live/run-scaleout.sh). Each prints its own `N passed, M failed` line. Run as
# root; scripts/test.sh calls it after cargo test. Builds the release dataplane if cargo
# finds it missing or stale. Takes about a minute once built.
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

fragments_workdir=out/live-fragments
rm -rf "$fragments_workdir"
mkdir -p "$fragments_workdir"
lab_run "spf$$-" tests/live/fragments_test.py --workdir "$fragments_workdir"

bash tests/live/run-scaleout.sh
