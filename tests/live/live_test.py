"""Live test of spike-dataplane between a client and three flannel nodes.

tests/live/run.sh runs this as root. It builds the lab of scripts/lab/topology.py,
starts the dataplane and checks, printing PASS or FAIL with the reason for each:

- every request of a load run gets a response, and each node's share of the
  connections is within 5 percentage points of its Maglev table share;
- no reply crosses Spike's port, and the counters file accounts for the traffic;
- frames captured on a node's underlay are VXLAN as flannel decapsulates them;
- keep-alive connections on the remaining nodes survive a node's removal by SIGHUP;
- replaying the same 5-tuples keeps at least 95% of the remaining nodes' flows;
- a bad config on SIGHUP keeps the old backends;
- SIGTERM stops the dataplane with exit code 0 and final counters on stdout;
- no namespace or process of the run is left afterwards.

The last line is `N passed, M failed`; the exit code is 1 when anything failed.
"""

import argparse
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "lab"))

import capture  # noqa: E402 (the lab's modules are found through the path above)
import traffic  # noqa: E402
from dataplane import Dataplane, table_shares  # noqa: E402
from topology import (  # noqa: E402
    CLIENT_ADDRESS,
    VIP,
    VXLAN_PORT,
    VXLAN_VNI,
    Lab,
    LabError,
    exit_on_signals,
)

# Largest gap between a node's share of connections and its table share, in
# percentage points. With 2000 connections and shares of 1/3 the standard deviation
# of a share is about 1.05 points, so 5 points is a 4.7 sigma bound.
SHARE_TOLERANCE_POINTS = 5.0
# Part of the remaining nodes' flows that must keep their node in the replay.
MIN_STAYED_FRACTION = 0.95
HELD_CONNECTIONS = 30
NODE_CAPTURE_MAX_PACKETS = 200
NODE_CAPTURE_MAX_SECONDS = 60
SPIKE_CAPTURE_MAX_PACKETS = 100_000
SPIKE_CAPTURE_MAX_SECONDS = 150
# Requests made while a bad config is on disk.
BAD_CONFIG_REQUESTS = 100
# Seconds after which the test stops and removes the lab, even if something hangs.
TIME_LIMIT_S = 600


class Checks:
    """Counts and prints the outcome of each check."""

    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, condition, description, failure_detail=""):
        if condition:
            self.passed += 1
            print(f"PASS {description}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL {description}: {failure_detail}", flush=True)
        return condition


def check_shares(checks, results, shares):
    by_node = traffic.count_by_node(results)
    answered = sum(by_node.values())
    for name, share in sorted(shares.items()):
        observed = 100.0 * by_node[name] / answered if answered else 0.0
        expected = 100.0 * share
        checks.check(
            abs(observed - expected) <= SHARE_TOLERANCE_POINTS,
            f"{name} got {observed:.1f}% of connections, table share {expected:.1f}%",
            f"more than {SHARE_TOLERANCE_POINTS} points apart ({by_node[name]} of {answered})",
        )


# Fields of a captured frame, decoded with VXLAN on flannel's port. A field that
# occurs in both the outer and the inner headers lists the outer value first.
FRAME_FIELDS = ["udp.dstport", "vxlan.vni", "eth.dst", "ip.src", "udp.checksum",
                "udp.checksum.status"]


def frame_problems(row, node):
    """Return what is wrong with one frame sent to node, by check name."""
    port, vni, macs, sources, checksum, status = row
    problems = {}
    if port.split(",")[0] != str(VXLAN_PORT):
        problems["port"] = port
    if vni != str(VXLAN_VNI):
        problems["vni"] = vni

    mac_list = macs.split(",")
    if len(mac_list) != 2 or mac_list[1].lower() != node.vtep_mac.lower():
        problems["inner MAC"] = macs
    source_list = sources.split(",")
    if len(source_list) != 2 or source_list[1] != CLIENT_ADDRESS:
        problems["inner source"] = sources

    # tshark's udp.checksum.status is 1 for a verified good checksum. A zero checksum
    # means the sender computed none, which RFC 768 allows over IPv4.
    outer_checksum = checksum.split(",")[0]
    outer_status = status.split(",")[0]
    if int(outer_checksum or "0", 16) != 0 and outer_status != "1":
        problems["checksum"] = f"{outer_checksum} status {outer_status}"
    return problems


def check_node_capture(checks, pcap, node):
    """Check the UDP frames that Spike sent to one node's underlay interface."""
    rows = capture.read_fields(pcap, FRAME_FIELDS, "udp")
    checks.check(bool(rows), f"capture on {node.name}'s eth0 holds frames from Spike",
                 f"none in {pcap}")
    if not rows:
        return

    failures = {}
    for number, row in enumerate(rows, 1):
        for name, value in frame_problems(row, node).items():
            failures.setdefault(name, []).append((number, value))

    count = len(rows)
    expectations = [
        ("port", f"{count} frames to {node.name} go to UDP port {VXLAN_PORT}"),
        ("vni", f"{count} frames to {node.name} carry VNI {VXLAN_VNI}"),
        ("inner MAC", f"inner destination MAC is {node.name}'s VtepMAC {node.vtep_mac}"),
        ("inner source", f"inner source address is the client's {CLIENT_ADDRESS}"),
        ("checksum", "outer UDP checksum is 0 or valid"),
    ]
    for name, description in expectations:
        wrong = failures.get(name, [])
        checks.check(not wrong, description,
                     f"{len(wrong)} frames differ, (frame, {name}): {wrong[:5]}")


def check_counters(checks, counters, answered, nodes):
    """Check that the counters file accounts for the load run's packets."""
    # A connection sends at least SYN, ACK with the request, and ACK of the reply.
    minimum = max(1, 3 * answered)
    checks.check(
        counters.get("forwarded", 0) >= minimum,
        f"counters file: forwarded >= {minimum} after {answered} connections",
        f"forwarded = {counters.get('forwarded')}",
    )
    services = counters.get("services") or [{}]
    backends = {backend.get("name"): backend for backend in services[0].get("backends", [])}
    for node in nodes:
        backend = backends.get(node.name, {})
        checks.check(
            backend.get("packets", 0) > 0,
            f"counters file: {node.name} has forwarded packets",
            f"backend entry {backend or 'missing'}",
        )


def check_held(checks, opened, after, removed_name):
    checks.check(
        not traffic.failures(opened),
        f"{len(opened)} keep-alive connections opened",
        f"failed: {traffic.failures(opened)[:3]}",
    )
    survivors = 0
    problems = []
    for first, second in zip(opened, after):
        if first["error"] or first["node"] == removed_name:
            continue
        if second["error"]:
            problems.append(f"port {first['source_port']}: {second['error']}")
        elif (second["node"], second["pod"]) != (first["node"], first["pod"]):
            problems.append(
                f"port {first['source_port']}: {first['node']}/{first['pod']} became "
                f"{second['node']}/{second['pod']}"
            )
        else:
            survivors += 1
    checks.check(
        survivors > 0 and not problems,
        f"{survivors} held connections on the remaining nodes still work after the removal",
        f"{len(problems)} broken: {problems[:5]}",
    )


def check_replay(checks, first, replay, removed_name):
    checks.check(
        not traffic.failures(replay),
        f"all {len(replay)} replayed requests answered",
        f"{len(traffic.failures(replay))} failed, first: {traffic.failures(replay)[:3]}",
    )
    outcome = traffic.compare_replay(first, replay)
    stayed = sum(counts["stayed"] for name, counts in outcome.items() if name != removed_name)
    total = sum(sum(counts.values()) for name, counts in outcome.items() if name != removed_name)
    fraction = stayed / total if total else 0.0
    checks.check(
        fraction >= MIN_STAYED_FRACTION,
        f"{stayed} of {total} replayed flows of the remaining nodes kept their node",
        f"{100 * fraction:.1f}% is below {100 * MIN_STAYED_FRACTION:.0f}%",
    )
    landed = traffic.count_by_node(replay)[removed_name]
    checks.check(landed == 0, f"no replayed flow reached the removed {removed_name}",
                 f"{landed} did")


def check_first_run(checks, lab, dataplane, requests):
    """Run the first load with captures on node1 and on Spike's link; return its results."""
    watched = lab.nodes[0]
    node_capture = capture.Capture(
        lab, watched.namespace, "eth0", lab.workdir / f"{watched.name}-eth0.pcap",
        NODE_CAPTURE_MAX_PACKETS, NODE_CAPTURE_MAX_SECONDS,
        # The router's bridge floods frames for MACs it has not learned yet to every
        # port, so the capture keeps only the frames addressed to this node.
        f"ether dst {watched.underlay_mac} and udp",
    )
    spike_capture = capture.Capture(
        lab, *lab.spike_link, lab.workdir / "spike-link.pcap",
        SPIKE_CAPTURE_MAX_PACKETS, SPIKE_CAPTURE_MAX_SECONDS,
    )
    first = traffic.run_load(lab, "first", requests=requests)

    failed = traffic.failures(first)
    checks.check(
        not failed, f"all {len(first)} requests answered",
        f"{len(failed)} failed, first: {failed[:3]}",
    )
    check_shares(checks, first, table_shares(lab.nodes))
    counters = dataplane.fresh_counters()
    check_counters(checks, counters, len(first) - len(failed), lab.nodes)

    spike_pcap = spike_capture.stop()
    from_vip = capture.count_frames(spike_pcap, f"ip.src == {VIP}")
    checks.check(from_vip == 0, "no frame from the VIP crossed Spike's port",
                 f"{from_vip} did (see {spike_pcap})")
    check_node_capture(checks, node_capture.stop(), watched)
    return first


def check_removal(checks, lab, dataplane, first, first_ended):
    """Remove the last node by SIGHUP with connections held open, then replay `first`."""
    held_connections = traffic.HeldConnections(lab, count=HELD_CONNECTIONS)
    opened = held_connections.open()
    removed = lab.nodes[-1]
    try:
        before, after = dataplane.reload(lab.nodes[:-1])
    except LabError as error:
        checks.check(False, f"SIGHUP without {removed.name} changes the generation", str(error))
        return False
    checks.check(True, f"SIGHUP without {removed.name}: generation {before} -> {after}")
    check_held(checks, opened, held_connections.request_again(), removed.name)

    # The replay then meets Maglev's new table rather than the first run's flow entries.
    dataplane.forget_closed_flows(first_ended)
    replay = traffic.run_load(
        lab, "replay", source_ports=traffic.replay_ports(first)
    )
    check_replay(checks, first, replay, removed.name)
    return True


def check_bad_config(checks, lab, dataplane):
    """Send SIGHUP with an invalid config on disk; the running backends must stay."""
    removed = lab.nodes[-1]
    generation = dataplane.wait_for_counters()["generation"]
    dataplane.config_path.write_text("[node\nthis is not TOML\n", encoding="utf-8")
    dataplane.process.send_signal(signal.SIGHUP)
    # The dataplane handles SIGHUP on its main lcore; two counter intervals cover it.
    counters = dataplane.fresh_counters()

    after_bad = traffic.run_load(lab, "after-bad-config", requests=BAD_CONFIG_REQUESTS)
    checks.check(
        dataplane.process.poll() is None,
        "spike-dataplane keeps running after a bad config",
        f"exit code {dataplane.process.returncode}",
    )
    checks.check(counters["generation"] == generation,
                 f"generation stays {generation} after a bad config",
                 f"it became {counters['generation']}")
    checks.check(
        not traffic.failures(after_bad) and traffic.count_by_node(after_bad)[removed.name] == 0,
        f"after a bad config all {BAD_CONFIG_REQUESTS} requests go to the previous backends",
        f"{len(traffic.failures(after_bad))} failed, by node "
        f"{dict(traffic.count_by_node(after_bad))}",
    )


def run_checks(checks, lab, requests):
    lab.create()
    lab.start_pods()
    dataplane = Dataplane(lab)
    try:
        dataplane.start(lab.nodes)
    except LabError as error:
        checks.check(False, "spike-dataplane starts and logs `forwarding started`", str(error))
        return
    checks.check(True, "spike-dataplane starts and logs `forwarding started`")

    first = check_first_run(checks, lab, dataplane, requests)
    first_ended = time.monotonic()
    if not check_removal(checks, lab, dataplane, first, first_ended):
        return
    check_bad_config(checks, lab, dataplane)

    code, final = dataplane.stop()
    checks.check(code == 0, "spike-dataplane exits 0 on SIGTERM", f"exit code {code}")
    checks.check(
        final.get("forwarded", 0) > 0,
        "spike-dataplane prints its final counters on stdout",
        f"parsed {final} from {dataplane.stdout_path}",
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", required=True, help="namespace name prefix, unique per run")
    parser.add_argument("--workdir", required=True, type=Path, help="configs, logs and captures")
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()

    exit_on_signals(TIME_LIMIT_S)
    args.workdir.mkdir(parents=True, exist_ok=True)
    checks = Checks()
    lab = Lab(args.prefix, args.workdir)
    try:
        run_checks(checks, lab, args.requests)
    except LabError as error:
        checks.check(False, "live test ran to the end", str(error))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        lab.destroy()
        problems = lab.leftovers()
        checks.check(
            not problems, "no namespace or process of the run is left", "; ".join(problems)
        )
        print(f"logs, configs and captures: {args.workdir}")
        print(f"{checks.passed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
