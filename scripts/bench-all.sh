#!/usr/bin/env bash
# Runs every packet-rate and scaling benchmark of BENCHMARKS.md and redraws its plots.
#
#   scripts/bench-all.sh [--quick] [--hugepages]
#
# Steps, each bounded (about 10 minutes in all on a 2-vCPU VM, --quick about 3):
#  1. dpdk-testpmd io and macswap against spike-dataplane, 1, 10k and 1M flows
#     (scripts/bench/packet_rate.py), then 10k flows with 512-byte and IPv6 frames;
#  2. instructions per decided packet under callgrind (core-bench ipp);
#  3. decision rate and conntrack bytes per flow from 1k to 10M flows (core-bench scaling);
#  4. Maglev table population for 10 to 5000 backends (criterion bench maglev);
#  5. snapshot build and publish-to-worker latency (core-bench publish);
#  6. plots into benches/plots (scripts/bench/plot.py, needs matplotlib).
# Results go to target/bench. Needs root for DPDK, dpdk-testpmd and valgrind.
# Not part of CI: the figures depend on the machine.
set -euo pipefail

cd "$(dirname "$0")/.."
quick=0
hugepages=()
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1 ;;
        --hugepages) hugepages=(--hugepages) ;;
        *) echo "usage: $0 [--quick] [--hugepages]" >&2; exit 2 ;;
    esac
done

results=target/bench
mkdir -p "$results"
cargo build --release -q -p spike-dataplane -p spike-benches --bin core-bench
core_bench=target/release/core-bench

echo "== 1. packet rate against dpdk-testpmd" >&2
if ((quick)); then
    python3 scripts/bench/packet_rate.py --flows 10000,1000000 --repetitions 1 --window 2 \
        "${hugepages[@]}" --output "$results/packet-rate.json"
else
    python3 scripts/bench/packet_rate.py --flows 1,10000,1000000 --repetitions 3 \
        "${hugepages[@]}" --output "$results/packet-rate.json"
    python3 scripts/bench/packet_rate.py --flows 10000 --sizes 512 --families 4,6 \
        --repetitions 3 "${hugepages[@]}" --output "$results/packet-rate-512.json"
    python3 scripts/bench/packet_rate.py --flows 10000 --sizes 64 --families 6 \
        --repetitions 3 "${hugepages[@]}" --output "$results/packet-rate-ipv6.json"
fi

echo "== 2. instructions per packet (callgrind)" >&2
collected() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$core_bench" ipp "$1" "$2" 2>&1 \
        | sed -n 's/.*Collected : //p'
}
for flows in 1 10000; do
    low=$(collected "$flows" 32000)
    high=$(collected "$flows" 96000)
    echo "{\"flows\": $flows, \"instructions_per_packet\": $(( (high - low) / 64000 ))}"
done | tee "$results/instructions.jsonl"

echo "== 3. scaling of the decision with tracked flows" >&2
if ((quick)); then
    "$core_bench" scaling 1 1000 100000 1000000 | tee "$results/scaling.jsonl"
else
    "$core_bench" scaling 2 1000 10000 100000 1000000 4000000 10000000 \
        | tee "$results/scaling.jsonl"
fi

echo "== 4. Maglev table population" >&2
cargo bench -q -p spike-benches --bench maglev -- --warm-up-time 1 --measurement-time 2 \
    2>&1 | grep -E '^maglev_build|time:' | tee "$results/maglev.txt"

echo "== 5. snapshot publish to worker" >&2
"$core_bench" publish 200 | tee "$results/publish.json"

echo "== 6. plots" >&2
python3 scripts/bench/plot.py --results "$results" --output benches/plots
ls benches/plots
