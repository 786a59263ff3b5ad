#!/usr/bin/env bash
# Spike's live demo. Installs what Spike needs, builds it, then runs the VIP of a
# three-node flannel cluster through spike-dataplane, all inside network namespaces
# that this script creates and removes (scripts/lab/topology.py draws the layout):
#
#   1. a client makes 1000 HTTP requests to the VIP, one TCP connection each, and the
#      demo prints how many each node and pod served, next to each node's Maglev table
#      share;
#   2. a capture on Spike's port shows that replies go straight from the nodes to the
#      client, and Spike's counters show what it forwarded;
#   3. one node is removed from the config live (SIGHUP) and the same 5-tuples are
#      replayed: only the removed node's flows move;
#   4. the dataplane stops;
#   5. the lab is built again with two Spike nodes (dataplane, spike-controlplane and
#      BIRD each) behind the router's ECMP route, which comes from BGP;
#   6. one Spike node is killed with kill -9 under 100 streamed keep-alive
#      connections, and the demo prints how many were kept and lost and the longest
#      interruption;
#   and everything stops and every namespace and process is removed, also on Ctrl-C.
#
# Run as root on Debian 12. On 2 cores the first release build of the three binaries
# takes about 15 minutes, and the demo itself (1000 requests, then the two-node scenes)
# one to two minutes.
# Logs, configs and captures stay in out/live-demo/ (the two-node scenes in
# out/live-demo/scaleout/). SPIKE_DEMO_REQUESTS changes the number of requests.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cargo build --release --locked -p spike-dataplane -p spike-trace -p spike-controlplane

workdir=out/live-demo
rm -rf "$workdir"
mkdir -p "$workdir"

source scripts/lab/common.sh
lab_run "spk$$-" scripts/lab/demo.py --workdir "$workdir" \
    --requests "${SPIKE_DEMO_REQUESTS:-1000}"
