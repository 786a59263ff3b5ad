#!/usr/bin/env python3
"""Measure packets per second on one worker core: dpdk-testpmd io and macswap, then
spike-dataplane, on the same generated captures, in one run.

Every measurement replays a capture from net_pcap with infinite_rx=1. testpmd forwards
it to a net_null port that receives nothing (no-rx=1). spike-dataplane owns one port,
so it receives from net_pcap and transmits on the same net_pcap port, which frees the
frames because no tx_pcap or tx_iface is given, as net_null does. Both run with
`-l 0-1`: lcore 0 is the main lcore and lcore 1 forwards.

Rates:
- testpmd prints Rx-pps of port 0 once per second (--stats-period 1). The first
  nonzero sample is partial and dropped; the rate is the mean of the next --window
  samples.
- spike-dataplane writes its counters file every 10 ms. After --warmup seconds, the
  rate is the change in rx_packets between two observed updates --window seconds apart,
  divided by the time between them.

Each repetition runs the three programs back to back, so slow phases of a shared
machine hit all three alike. The median over --repetitions is reported, with Spike's
ratio to testpmd macswap. Results go to --output as JSON for plot.py.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SPIKE = ROOT / "target/release/spike-dataplane"
# Memory per mbuf for -m. Without hugepages, DPDK 22.11 places one 2176-byte-data-room mbuf
# per 4 KiB page (measured: 2M mbufs needed -m 9000), so count a page and some overhead.
MBUF_BYTES = 4352
EXTRA_MBUFS = 16384
START_TIMEOUT_S = 120
PROGRAMS = ("testpmd-io", "testpmd-macswap", "spike")


def eal_common(prefix, mbufs, hugepages):
    args = ["-l", "0-1", "--no-pci", "--no-shconf", "--no-telemetry", "--file-prefix", prefix,
            "--log-level", "lib.eal:notice"]
    memory_mb = mbufs * MBUF_BYTES // (1 << 20) + 512
    if not hugepages:
        args += ["--no-huge"]
    return args + ["-m", str(memory_mb)]


def capture_path(cache, flows, size, family):
    path = cache / f"vip-f{flows}-s{size}-v{family}.pcap"
    if not path.exists():
        subprocess.run([sys.executable, str(HERE / "gen_pcap.py"), "--flows", str(flows),
                        "--size", str(size), "--family", str(family), "--output", str(path)],
                       check=True)
    return path


def capture_frames(path):
    """Count the records of a pcap without reading their data."""
    count = 0
    with open(path, "rb") as capture:
        capture.seek(24)
        while header := capture.read(16):
            caplen = int.from_bytes(header[8:12], "little")
            capture.seek(caplen, os.SEEK_CUR)
            count += 1
    return count


def stop(process):
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_testpmd(mode, capture, frames, args, workdir):
    mbufs = frames + EXTRA_MBUFS
    command = ["dpdk-testpmd", *eal_common("bench-testpmd", mbufs, args.hugepages),
               "--vdev", f"net_pcap0,rx_pcap={capture},infinite_rx=1",
               "--vdev", "net_null0,no-rx=1", "--",
               "--no-flush-rx", f"--forward-mode={mode}", "--auto-start", "--stats-period", "1",
               "--nb-cores", "1", "--total-num-mbufs", str(mbufs)]
    env = dict(os.environ, RUNTIME_DIRECTORY=str(workdir))
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env)
    samples = []
    port = None
    deadline = time.monotonic() + START_TIMEOUT_S + args.window + 5
    try:
        for line in process.stdout:
            if time.monotonic() > deadline:
                break
            if "NIC statistics for port" in line:
                port = line.split("port")[1].split()[0]
            elif "Rx-pps:" in line and port == "0":
                pps = int(line.split()[1])
                if pps > 0:
                    samples.append(pps)
                if len(samples) > args.window:
                    break
    finally:
        stop(process)
    if len(samples) <= args.window:
        raise RuntimeError(f"testpmd {mode} gave {len(samples)} rate samples for {capture}")
    return statistics.mean(samples[1:]) / 1e6


def check_forwarded(counters):
    """Raise unless nearly every frame got a forward verdict: a rate of drops or kernel
    verdicts would not measure the decision."""
    totals = json.loads(counters.read_text())
    if totals["forwarded"] < 0.99 * totals["rx_packets"]:
        other = {f"{group}.{reason}": count for group in ("drops", "kernel")
                 for reason, count in totals[group].items() if count}
        raise RuntimeError(f"spike-dataplane forwarded {totals['forwarded']} of "
                           f"{totals['rx_packets']} frames; other verdicts: {other}")


def read_rx(counters):
    try:
        return json.loads(counters.read_text())["rx_packets"]
    except (OSError, ValueError, KeyError):
        return None


def spike_config(capture, frames, flows, args, workdir):
    mbufs = frames + EXTRA_MBUFS
    eal = eal_common("bench-spike", mbufs, args.hugepages)
    eal += ["--vdev", f"net_pcap0,rx_pcap={capture},infinite_rx=1"]
    template = (HERE / "spike-bench.toml").read_text()
    capacity = max(2 * flows, 1024)
    text = template.replace("@CAPACITY@", str(capacity))
    quoted = ", ".join(json.dumps(arg) for arg in eal)
    # net_pcap's port MAC is not the node MAC the capture is addressed to, so the MAC filter
    # would drop every frame before the decision.
    text += (f'\n[dpdk]\neal_args = [{quoted}]\nport = "net_pcap0"\nworkers = 1\nmbufs = {mbufs}\n'
             'mac_filter = false\n')
    path = workdir / "spike.toml"
    path.write_text(text)
    return path


def wait_for_change(counters, previous, deadline):
    """Poll the counters file until rx_packets differs from `previous`."""
    while time.monotonic() < deadline:
        value = read_rx(counters)
        if value is not None and value != previous:
            return time.monotonic(), value
        time.sleep(0.002)
    raise RuntimeError("spike-dataplane counters stopped changing")


def run_spike(capture, frames, flows, args, workdir):
    config = spike_config(capture, frames, flows, args, workdir)
    counters = workdir / "counters.json"
    counters.unlink(missing_ok=True)
    env = dict(os.environ, RUNTIME_DIRECTORY=str(workdir), RUST_LOG="warn")
    log = open(workdir / "spike.log", "w")
    process = subprocess.Popen([str(SPIKE), "--config", str(config), "--counters-file",
                                str(counters), "--counters-interval-ms", "10"],
                               stdout=subprocess.DEVNULL, stderr=log, env=env)
    try:
        start_deadline = time.monotonic() + START_TIMEOUT_S
        _, first = wait_for_change(counters, 0, start_deadline)
        time.sleep(args.warmup)
        t0, rx0 = wait_for_change(counters, read_rx(counters), time.monotonic() + 5)
        time.sleep(args.window)
        t1, rx1 = wait_for_change(counters, read_rx(counters), time.monotonic() + 5)
    finally:
        stop(process)
        log.close()
    check_forwarded(counters)
    return (rx1 - rx0) / (t1 - t0) / 1e6


def measure_case(flows, size, family, args, workdir):
    capture = capture_path(args.cache, flows, size, family)
    frames = capture_frames(capture)
    rates = {program: [] for program in PROGRAMS}
    for repetition in range(args.repetitions):
        rates["testpmd-io"].append(run_testpmd("io", capture, frames, args, workdir))
        rates["testpmd-macswap"].append(run_testpmd("macswap", capture, frames, args, workdir))
        rates["spike"].append(run_spike(capture, frames, flows, args, workdir))
        print(f"  flows {flows} size {size} IPv{family} repetition {repetition + 1}: " +
              ", ".join(f"{p} {rates[p][-1]:.2f}" for p in PROGRAMS), file=sys.stderr)
    medians = {program: statistics.median(values) for program, values in rates.items()}
    return {
        "flows": flows, "size": size, "family": family, "frames": frames,
        "samples_mpps": rates, "median_mpps": medians,
        "spike_to_macswap": medians["spike"] / medians["testpmd-macswap"],
    }


def parse_list(text):
    return [int(item) for item in text.split(",") if item]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=parse_list, default=[1, 10_000, 1_000_000],
                        help="comma-separated flow counts (default 1,10000,1000000)")
    parser.add_argument("--sizes", type=parse_list, default=[64],
                        help="comma-separated frame sizes in bytes on the wire (default 64)")
    parser.add_argument("--families", type=parse_list, default=[4],
                        help="comma-separated IP versions, 4 and/or 6 (default 4)")
    parser.add_argument("--repetitions", type=int, default=3, help="runs per program (default 3)")
    parser.add_argument("--window", type=int, default=3,
                        help="measured seconds per run (default 3)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds spike-dataplane forwards before its window (default 2)")
    parser.add_argument("--hugepages", action="store_true",
                        help="use hugepages (mounted and reserved beforehand) instead of --no-huge")
    parser.add_argument("--cache", type=Path, default=ROOT / "target/bench/pcaps",
                        help="directory for generated captures (default target/bench/pcaps)")
    parser.add_argument("--output", type=Path, default=ROOT / "target/bench/packet-rate.json",
                        help="JSON results file (default target/bench/packet-rate.json)")
    args = parser.parse_args()
    if shutil.which("dpdk-testpmd") is None:
        parser.error("dpdk-testpmd not found: install the dpdk package")
    if not SPIKE.exists():
        parser.error(f"{SPIKE} not found: run cargo build --release -p spike-dataplane")
    args.cache.mkdir(parents=True, exist_ok=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)

    results = []
    with tempfile.TemporaryDirectory(prefix="spike-bench-") as workdir:
        for family in args.families:
            for size in args.sizes:
                for flows in args.flows:
                    results.append(measure_case(flows, size, family, args, Path(workdir)))
    args.output.write_text(json.dumps({"repetitions": args.repetitions, "window_s": args.window,
                                       "results": results}, indent=1) + "\n")

    print("| flows | frame | IP | testpmd io Mpps | testpmd macswap Mpps | Spike Mpps |"
          " Spike / macswap |")
    print("|---|---|---|---|---|---|---|")
    for result in results:
        median = result["median_mpps"]
        print(f"| {result['flows']:,} | {result['size']} B | IPv{result['family']} |"
              f" {median['testpmd-io']:.2f} | {median['testpmd-macswap']:.2f} |"
              f" {median['spike']:.2f} | {result['spike_to_macswap']:.2f} |")


if __name__ == "__main__":
    main()
