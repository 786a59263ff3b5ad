"""Spike's live demo: a client, Spike on DPDK and three flannel nodes in namespaces.

scripts/demo.sh installs, builds and runs this. It balances HTTP requests over
the nodes, shows that replies bypass Spike, removes a node with SIGHUP and
replays the same 5-tuples to show that only that node's flows move. Then it
builds the lab again with two Spike nodes behind the router's ECMP, routes from
BGP, and kills one Spike node under streamed connections. It removes everything
it made.
"""

import argparse
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import bgp
import capture
import traffic
from bgp import HOLD_TIME_S
from dataplane import REPOSITORY, TCP_CLOSING_TIMEOUT_S, Dataplane, table_shares
from scaleout import SpikeNode, start_router, stream_figures
from topology import CLIENT_ADDRESS, SERVICE_PORT, VIP, Lab, LabError, exit_on_signals

TRACER = REPOSITORY / "target" / "release" / "spike-trace"
# Bounds of the capture on Spike's port: each request takes about 10 frames there.
SPIKE_CAPTURE_MAX_PACKETS = 100_000
SPIKE_CAPTURE_MAX_SECONDS = 150
# Seconds after which the demo stops and removes the lab, even if something hangs.
TIME_LIMIT_S = 600
# Keep-alive connections that stream requests while a Spike node fails.
STREAMED_CONNECTIONS = 100
STREAM_INTERVAL_S = 0.1
# Seconds the streams run before the failure and after the router moved the flows.
STREAM_BEFORE_S = 2.0
STREAM_AFTER_S = 3.0
# Seconds to wait for BGP sessions and route changes in the router.
ROUTING_TIMEOUT_S = 20.0


def heading(text):
    print(f"\n== {text}", flush=True)


def percent(part, whole):
    return 100.0 * part / whole if whole else 0.0


def print_distribution(lab, results, shares, counters):
    by_node = traffic.count_by_node(results)
    by_pod = traffic.count_by_pod(results)
    answered = sum(by_node.values())
    backend_packets = {}
    for service in counters.get("services", []):
        for backend in service.get("backends", []):
            backend_packets[backend["name"]] = backend["packets"]
    pod_names = [pod.name for pod in lab.nodes[0].pods]
    print(
        f"{'node':8} {'table share':>12} {'requests':>9} {'share':>7}   "
        + "".join(f"{name:>6}" for name in pod_names)
        + f"   {'packets Spike sent it':>21}"
    )
    for node in lab.nodes:
        pods = "".join(f"{by_pod[(node.name, name)]:>6}" for name in pod_names)
        print(
            f"{node.name:8} {100 * shares.get(node.name, 0):>11.1f}% {by_node[node.name]:>9} "
            f"{percent(by_node[node.name], answered):>6.1f}%   {pods}"
            f"   {backend_packets.get(node.name, 0):>21}"
        )


def print_counters(counters):
    """Print the counters file: totals, then every non-zero reason."""
    totals = ["generation", "rx_packets", "forwarded", "replies", "tx_dropped"]
    print("  " + "  ".join(f"{name}={counters.get(name)}" for name in totals))
    for group in ("kernel", "drops", "selections", "port"):
        values = counters.get(group) or {}
        nonzero = {name: value for name, value in values.items() if value}
        if nonzero:
            print(f"  {group}: " + ", ".join(f"{name}={value}" for name, value in nonzero.items()))


def show_reply_path(pcap, lab):
    """Count what crossed Spike's port during the first run."""
    from_client = capture.count_frames(
        pcap, f"!vxlan && ip.src == {CLIENT_ADDRESS} && ip.dst == {VIP}"
    )
    encapsulated = capture.count_frames(pcap, f"vxlan && eth.src == {lab.spike_mac}")
    from_vip = capture.count_frames(pcap, f"ip.src == {VIP}")
    print(f"Capture on Spike's link, at the router's end ({pcap}):")
    print(f"  {from_client} frames from the client to the VIP arrived")
    print(f"  {encapsulated} VXLAN frames left toward the nodes")
    print(f"  {from_vip} frames with source {VIP}: replies went from the nodes to the client")


def trace_capture(pcap, config_path, results):
    """Run spike-trace over the captured frames and compare its backend per flow."""
    if not TRACER.exists():
        print(f"{TRACER} not found; skipping the offline comparison")
        return
    output = subprocess.run(
        [str(TRACER), "--config", str(config_path), "--input", str(pcap)],
        capture_output=True, text=True, check=False,
    )
    if output.returncode != 0:
        print(f"spike-trace failed: {output.stderr.strip()}")
        return
    pattern = re.compile(
        rf"forward .* tcp {re.escape(CLIENT_ADDRESS)}:(\d+) -> "
        rf"{re.escape(VIP)}:{SERVICE_PORT} .*backend=(\S+) .*why=new_flow"
    )
    predicted = {}
    for line in output.stdout.splitlines():
        match = pattern.search(line)
        if match:
            predicted[int(match.group(1))] = match.group(2)
    observed = {result["source_port"]: result["node"] for result in results if not result["error"]}
    compared = [port for port in observed if port in predicted]
    agree = sum(1 for port in compared if predicted[port] == observed[port])
    print(
        f"spike-trace, run offline over the same capture with the same config, picks the "
        f"node that answered for {agree} of {len(compared)} flows."
    )


def start(lab):
    heading("Topology")
    lab.create()
    lab.start_pods()
    print(lab.describe())

    dataplane = Dataplane(lab)
    started = time.monotonic()
    dataplane.start(lab.nodes)
    print(
        f"spike-dataplane forwarding after {time.monotonic() - started:.1f} s "
        f"(config {dataplane.config_path}, log {dataplane.stderr_path})"
    )
    return dataplane


def balance(lab, dataplane, requests):
    """Step 1: the first load run, captured on Spike's link. Returns results and pcap."""
    heading(f"1. {requests} HTTP requests to {VIP}:{SERVICE_PORT}, one TCP connection each")
    spike_capture = capture.Capture(
        lab, *lab.spike_link, lab.workdir / "spike-link.pcap",
        SPIKE_CAPTURE_MAX_PACKETS, SPIKE_CAPTURE_MAX_SECONDS,
    )
    started = time.monotonic()
    first = traffic.run_load(lab, "first", requests=requests)
    elapsed = time.monotonic() - started

    failed = traffic.failures(first)
    print(f"{len(first) - len(failed)} of {len(first)} answered in {elapsed:.1f} s")
    for result in failed[:5]:
        print(f"  failed: {result['error']}")
    counters = dataplane.fresh_counters()
    pcap = spike_capture.stop()
    print_distribution(lab, first, table_shares(lab.nodes), counters)
    return first, pcap, counters


def reply_path(lab, dataplane, first, pcap, counters):
    """Step 2: what crossed Spike's link, Spike's counters and the offline tracer."""
    heading("2. Replies bypass Spike")
    show_reply_path(pcap, lab)
    print("Spike's counters file:")
    print_counters(counters)
    trace_capture(pcap, dataplane.config_path, first)


def remove_node(lab, dataplane, first, first_ended):
    """Step 3: drop the last node by SIGHUP and replay the first run's 5-tuples."""
    removed = lab.nodes[-1]
    remaining = lab.nodes[:-1]
    heading(f"3. Removing {removed.name} live (new config, SIGHUP)")
    before, after = dataplane.reload(remaining)
    print(f"counters generation {before} -> {after}")

    dataplane.forget_closed_flows(first_ended)
    selections_before = dataplane.fresh_counters().get("selections", {})
    replay = traffic.run_load(
        lab, "replay", source_ports=traffic.replay_ports(first)
    )
    selections_after = dataplane.fresh_counters().get("selections", {})
    chosen = {
        name: selections_after.get(name, 0) - selections_before.get(name, 0)
        for name in ("new_flow", "reselected_backend_removed")
    }
    from_table = chosen["new_flow"] + chosen["reselected_backend_removed"]
    from_entries = max(0, len(replay) - from_table)
    print(
        f"Replayed the {len(replay)} requests from the same source ports, after the "
        "first run's closed connections had expired from Spike's flow table (this demo "
        f"sets conntrack tcp_closing to {TCP_CLOSING_TIMEOUT_S} s; the default is 10 s)."
    )
    print(
        f"Spike looked up {from_table} of them in its new Maglev table: "
        f"{chosen['new_flow']} had no flow entry left, and "
        f"{chosen['reselected_backend_removed']} had an entry pointing to the removed "
        f"{removed.name}. The other {from_entries} reused a flow entry that was still live."
    )
    print_replay(lab, first, replay, removed, remaining)


def print_replay(lab, first, replay, removed, remaining):
    outcome = traffic.compare_replay(first, replay)
    print(f"{'first node':10} {'flows':>6} {'stayed':>7} {'moved':>6} {'failed':>7}   moved to")
    for node in lab.nodes:
        counts = outcome[node.name]
        destinations = traffic.moved_to(first, replay, node.name)
        moved = ", ".join(
            f"{name} {count}" for name, count in sorted(destinations.items()) if name != node.name
        )
        print(
            f"{node.name:10} {sum(counts.values()):>6} {counts['stayed']:>7} "
            f"{counts['moved']:>6} {counts['failed']:>7}   {moved}"
        )

    remaining_moved = sum(outcome[node.name]["moved"] for node in remaining)
    remaining_flows = sum(sum(outcome[node.name].values()) for node in remaining)
    removed_counts = outcome[removed.name]
    print(
        f"Flows that moved: {remaining_moved} of the remaining nodes' {remaining_flows}, "
        f"{removed_counts['moved']} of {removed.name}'s {sum(removed_counts.values())}."
    )


def stop(dataplane):
    heading("4. Stopping")
    code, final = dataplane.stop()
    print(f"spike-dataplane exited with code {code}. Its non-zero final counters on stdout:")
    for name, value in final.items():
        if value:
            print(f"  {name} {value}")


def fail_spike_node(prefix, workdir):
    """Step 5: two Spike nodes behind ECMP with BGP; kill -9 one under streamed traffic."""
    heading("5. Two Spike nodes behind the router's ECMP, routes from BGP")
    workdir.mkdir(parents=True, exist_ok=True)
    lab = Lab(prefix, workdir, spike_count=2, static_vip_route=False)
    try:
        lab.create()
        lab.start_pods()
        print(lab.describe())
        router = start_router(lab)
        nodes = [SpikeNode(lab, spike) for spike in lab.spikes]
        for node in nodes:
            node.start()
        _, waited = bgp.wait_for(bgp.next_hops_are(lab, lab.spikes), ROUTING_TIMEOUT_S,
                                 "ECMP route to the VIP through both Spike nodes")
        print(f"BGP sessions: {', '.join(sorted(router.established()))}; the router's "
              f"route after {waited:.1f} s:")
        print("  " + bgp.vip_route_text(lab).replace("\n", "\n  "))

        survivor, victim = nodes
        streams = traffic.StreamedConnections(lab, "failure", STREAMED_CONNECTIONS,
                                              STREAM_INTERVAL_S)
        streams.open()
        before = {node.spike.name: node.forwarded() for node in nodes}
        time.sleep(STREAM_BEFORE_S)
        print(f"{STREAMED_CONNECTIONS} keep-alive connections each send a request every "
              f"{STREAM_INTERVAL_S * 1000:.0f} ms. Packets forwarded in {STREAM_BEFORE_S:.0f} s: "
              + ", ".join(f"{node.spike.name} {node.forwarded() - before[node.spike.name]}"
                          for node in nodes))

        heading(f"6. kill -9 of {victim.spike.name}'s dataplane, control plane and BIRD")
        victim.kill()
        _, waited = bgp.wait_for(bgp.next_hops_are(lab, [survivor.spike]), ROUTING_TIMEOUT_S,
                                 f"route through {survivor.spike.name} only")
        print(f"The router withdrew {victim.spike.name} after {waited:.2f} s. kill -9 "
              "closes the BGP session's socket at once; a node that loses power is noticed "
              f"only after the BGP hold time ({HOLD_TIME_S} s here, bgp.hold_time_s) or "
              "by BFD (bgp.bfd):")
        print("  " + bgp.vip_route_text(lab))
        time.sleep(STREAM_AFTER_S)
        watched, lost, longest_ms = stream_figures(streams.stop())
        print(f"{survivor.spike.name} has no conntrack entry for the moved connections and "
              "picks their backend from the same Maglev table.")
        print(f"Connections kept: {len(watched) - len(lost)}, lost: {len(lost)}, "
              f"longest interruption: {longest_ms} ms")
        for result in lost[:5]:
            print(f"  lost: port {result['source_port']}: {result['error']}")
    finally:
        lab.destroy()
        problems = lab.leftovers()
        if problems:
            raise LabError("; ".join(problems))


def run_demo(lab, requests):
    dataplane = start(lab)
    first, pcap, counters = balance(lab, dataplane, requests)
    first_ended = time.monotonic()
    reply_path(lab, dataplane, first, pcap, counters)
    remove_node(lab, dataplane, first, first_ended)
    stop(dataplane)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", required=True, help="namespace name prefix, unique per run")
    parser.add_argument("--workdir", required=True, type=Path, help="configs, logs and captures")
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()

    exit_on_signals(TIME_LIMIT_S)
    args.workdir.mkdir(parents=True, exist_ok=True)
    lab = Lab(args.prefix, args.workdir)
    status = 0
    try:
        run_demo(lab, args.requests)
        # The second lab reuses the prefix, so the first must be gone.
        lab.destroy()
        fail_spike_node(args.prefix, args.workdir / "scaleout")
    except LabError as error:
        print(f"demo failed: {error}", file=sys.stderr)
        status = 1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        lab.destroy()
        problems = lab.leftovers()
        heading("Cleanup")
        print("\n".join(problems) if problems else "no namespace or process of this run is left")
    return status


if __name__ == "__main__":
    sys.exit(main())
