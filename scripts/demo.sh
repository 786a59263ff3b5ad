#!/usr/bin/env bash
# Installs what Spike needs, builds it and traces the sample captures through the
# dataplane core with configs/spike.toml: one line per frame with its verdict and
# backend, then tshark's view of the VXLAN frames Spike would send. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cargo build --release --locked -p spike-trace

captures=${SPIKE_PCAPS:-../shared/pcaps}
out=out/demo
mkdir -p "$out"

for capture in "$captures"/*.pcap; do
    name=$(basename "$capture" .pcap)
    echo
    echo "=== $name"
    ./target/release/spike-trace --config configs/spike.toml --input "$capture" \
        --output "$out/$name.vxlan.pcap" --counters
    if [ "$(stat -c %s "$out/$name.vxlan.pcap")" -gt 24 ]; then
        echo "--- tshark decoding $out/$name.vxlan.pcap"
        tshark -r "$out/$name.vxlan.pcap" -d udp.port==8472,vxlan \
            -T fields -E header=y -e frame.number -e ip.dst -e ipv6.dst -e udp.srcport \
            -e udp.dstport -e vxlan.vni -e eth.dst 2>/dev/null
    fi
done
