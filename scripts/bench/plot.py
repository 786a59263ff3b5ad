#!/usr/bin/env python3
"""Draw the benchmark plots for BENCHMARKS.md from the results the bench scripts wrote.

Reads, when present: target/bench/packet-rate.json (packet_rate.py),
target/bench/scaling.jsonl (core-bench scaling) and criterion's estimates for
maglev_build. Writes PNG files to --output (default benches/plots). Needs matplotlib.
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

ROOT = Path(__file__).resolve().parent.parent.parent
LINE_RATE_10G_64B_MPPS = 14.88


def plot_packet_rate(path, output):
    data = json.loads(path.read_text())
    results = [r for r in data["results"] if r["size"] == 64 and r["family"] == 4]
    if not results:
        return
    flows = [r["flows"] for r in results]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for program, label in [("testpmd-io", "testpmd io"), ("testpmd-macswap", "testpmd macswap"),
                           ("spike", "spike-dataplane")]:
        axes.plot(flows, [r["median_mpps"][program] for r in results], marker="o", label=label)
    axes.axhline(LINE_RATE_10G_64B_MPPS, color="grey", linestyle="--",
                 label="10 GbE line rate, 64 B")
    axes.set_xscale("log")
    axes.set_xlabel("flows")
    axes.set_ylabel("Mpps, one core (median)")
    axes.set_title("Packet rate, 64-byte IPv4 TCP, net_pcap in, frames freed on tx")
    axes.set_ylim(bottom=0)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(output / "packet-rate.png", dpi=110)
    plt.close(figure)


def plot_scaling(path, output):
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        return
    flows = [row["flows"] for row in rows]
    figure, rate_axes = plt.subplots(figsize=(7, 4.5))
    rate_axes.plot(flows, [row["mpps"] for row in rows], marker="o", color="tab:blue",
                   label="decision rate")
    rate_axes.set_xscale("log")
    rate_axes.set_xlabel("tracked flows")
    rate_axes.set_ylabel("Mpps, one core", color="tab:blue")
    rate_axes.set_ylim(bottom=0)
    memory_axes = rate_axes.twinx()
    memory_axes.plot(flows, [row["bytes_per_flow"] for row in rows], marker="s",
                     color="tab:red", label="conntrack bytes per flow")
    memory_axes.set_ylabel("conntrack bytes per tracked flow", color="tab:red")
    memory_axes.set_ylim(bottom=0)
    rate_axes.set_title("Worker::prefetch_burst + process, no DPDK")
    rate_axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(output / "scaling.png", dpi=110)
    plt.close(figure)


def plot_maglev(criterion_dir, output):
    series = {}
    for estimates in criterion_dir.glob("m*/*/new/estimates.json"):
        table_size = int(estimates.parts[-4][1:])
        backends = int(estimates.parts[-3])
        mean_ns = json.loads(estimates.read_text())["mean"]["point_estimate"]
        series.setdefault(table_size, []).append((backends, mean_ns / 1e6))
    if not series:
        return
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for table_size, points in sorted(series.items()):
        points.sort()
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                  label=f"M = {table_size}")
    axes.axhline(1.8, color="grey", linestyle="--", label="Maglev paper, M = 65537")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("backends")
    axes.set_ylabel("table population time (ms)")
    axes.set_title("MaglevTable::build")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(output / "maglev-build.png", dpi=110)
    plt.close(figure)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "target/bench",
                        help="directory of the result files (default target/bench)")
    parser.add_argument("--output", type=Path, default=ROOT / "benches/plots",
                        help="directory for the PNG files (default benches/plots)")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    if (args.results / "packet-rate.json").exists():
        plot_packet_rate(args.results / "packet-rate.json", args.output)
    if (args.results / "scaling.jsonl").exists():
        plot_scaling(args.results / "scaling.jsonl", args.output)
    plot_maglev(ROOT / "target/criterion/maglev_build", args.output)


if __name__ == "__main__":
    main()
