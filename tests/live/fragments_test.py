"""Live test: fragments of one datagram reach two Spike nodes and one backend.

tests/live/run.sh runs this as root after the main live test. It builds the lab of
scripts/lab/topology.py with two Spike nodes and two flannel nodes of one pod each:

    client 198.51.100.10 ---- router: 198.51.100.1, bridge br0 192.0.2.254
        spike1 eth0 192.0.2.1    spike-dataplane on net_pcap
        spike2 eth0 192.0.2.2    spike-dataplane on net_pcap
        node1  eth0 192.0.2.11   flannel.1 (VNI 1), DNAT of VIP:5300/udp to node1-pod1
        node2  eth0 192.0.2.12   the same, to node2-pod1

The router routes the VIP to one Spike node and, with an nftables mark on
`ip frag-off & 0x1fff != 0` and an `ip rule fwmark` table, every non-first fragment
to the other one, the way an ECMP router that hashes ports splits a datagram. Both
dataplanes list both nodes in `[cluster]`. The client sends UDP datagrams of 3000 to
8000 bytes with DF clear, which its kernel fragments at the 1500-byte MTU. Checks,
printed as PASS or FAIL with the reason:

- both dataplanes start;
- every datagram reaches a pod complete (its kernel reassembled it) and unchanged;
- every datagram of a flow reaches one node;
- the node that gets the non-first fragments redirects them, the designated node
  takes them in, and no fragment is dropped for lack of a record or as a bad redirect;
- SIGTERM stops both dataplanes with exit code 0;
- no namespace or process of the run is left afterwards.

A probe datagram finds the designated node first. One round sends the first
fragments to the designated node, so the other node redirects the rest; a second
round sends them to the other node, so the designated node receives non-first
fragments before their redirected first fragment and holds them. The last line is
`N passed, M failed`; the exit code is 1 when anything failed.
"""

import argparse
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "lab"))

from dataplane import (  # noqa: E402 (the lab's modules are found through the path above)
    DEFAULT_BINARY,
    HASH_KEY,
    SPIKE_VTEP_MAC,
    parse_counter_lines,
)
from topology import (  # noqa: E402
    CLIENT_ADDRESS,
    VIP,
    Lab,
    LabError,
    LineWatcher,
    exit_on_signals,
    netns_exec,
    run,
)

# The service: UDP on the lab's VIP, beside the pods' HTTP port.
SERVICE_PORT = 5300
REDIRECT_VNI = 4097
# Routing table of the router that carries the non-first fragments.
FRAGMENT_TABLE = 100
FRAGMENT_MARK = 1

# Flows (client sockets, so source ports) and datagrams per flow. Eight flows over two
# backends leave both nodes without traffic with probability 2 / 2^8.
FLOWS = 8
DATAGRAMS_PER_FLOW = 6
MIN_DATAGRAM_BYTES = 3000
MAX_DATAGRAM_BYTES = 8000
# Seconds between two datagrams, so that the software ports' receive buffers keep up
# with bursts of up to six fragments per datagram.
SEND_INTERVAL_S = 0.005
# Seconds the servers get to receive the last datagram.
RECEIVE_GRACE_S = 2.0
START_TIMEOUT_S = 60.0
SERVER_START_TIMEOUT_S = 10.0
COUNTERS_INTERVAL_MS = 200
# Seconds after which the test stops and removes the lab, even if something hangs.
TIME_LIMIT_S = 300
# Linux socket option values (linux/in.h); Python's socket module lacks them.
IP_MTU_DISCOVER = 10
IP_PMTUDISC_DONT = 0


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


def payload(flow, sequence):
    """Return the deterministic payload of datagram `sequence` of `flow`."""
    seed = hashlib.sha256(f"{flow}/{sequence}".encode()).digest()
    size = MIN_DATAGRAM_BYTES + int.from_bytes(seed[:4], "big") % (
        MAX_DATAGRAM_BYTES - MIN_DATAGRAM_BYTES + 1
    )
    header = f"{flow} {sequence} ".encode()
    body = (seed * (size // len(seed) + 1))[: size - len(header)]
    return header + body


def serve(args):
    """Pod role: print `node length sha256 source_port` for each datagram received."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    server.bind(("0.0.0.0", args.port))
    print("listening", flush=True)
    while True:
        data, (_, source_port) = server.recvfrom(65535)
        digest = hashlib.sha256(data).hexdigest()
        print(f"{args.node} {len(data)} {digest} {source_port}", flush=True)


def send(args):
    """Client role: send the datagrams with DF clear and print what was sent as JSON."""
    sockets = []
    for _ in range(args.flows):
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # DF clear, so the kernel fragments datagrams above the MTU.
        client.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
        client.bind((args.source, 0))
        sockets.append(client)
    sent = []
    for sequence in range(args.datagrams):
        for flow, client in enumerate(sockets):
            data = payload(args.tag * 1000 + flow, sequence)
            client.sendto(data, (args.vip, args.port))
            sent.append(
                {
                    "flow": flow,
                    "source_port": client.getsockname()[1],
                    "length": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            )
            time.sleep(args.interval)
    print(json.dumps(sent))


def prepare(lab):
    """Add this test's rules to a lab that `create` built.

    The router marks non-first fragments (offset above 0) for a table of their own,
    and each node sends the VIP's UDP port to its pod, as kube-proxy would.
    """
    ruleset = (
        "table ip spike_fragments {\n"
        "    chain prerouting {\n"
        "        type filter hook prerouting priority mangle; policy accept;\n"
        f"        ip daddr {VIP} ip frag-off & 0x1fff != 0 meta mark set {FRAGMENT_MARK}\n"
        "    }\n"
        "}\n"
    )
    run(netns_exec(lab.router_ns, ["nft", "-f", "-"]), input_text=ruleset)
    run(
        [
            "ip", "-n", lab.router_ns, "rule", "add", "fwmark", str(FRAGMENT_MARK),
            "table", str(FRAGMENT_TABLE),
        ]
    )
    for node in lab.nodes:
        ruleset = (
            "table ip spike_fragments {\n"
            "    chain prerouting {\n"
            "        type nat hook prerouting priority dstnat; policy accept;\n"
            f"        ip daddr {VIP} udp dport {SERVICE_PORT} dnat to {node.pods[0].address}\n"
            "    }\n"
            "}\n"
        )
        run(netns_exec(node.namespace, ["nft", "-f", "-"]), input_text=ruleset)


def route(lab, first_to, rest_to):
    """Route the VIP to Spike node `first_to` and its non-first fragments to `rest_to`."""
    for spike, table in ((lab.spikes[first_to], "main"), (lab.spikes[rest_to], FRAGMENT_TABLE)):
        run(
            [
                "ip", "-n", lab.router_ns, "route", "replace", f"{VIP}/32",
                "via", spike.underlay_address, "dev", "br0", "table", str(table),
            ]
        )


def eal_args(file_prefix):
    """EAL arguments for a net_pcap port on the namespace's eth0.

    net_af_packet, which the other live tests use, cannot carry this test's traffic:
    DPDK 22.11 joins its socket to a fanout group with PACKET_FANOUT_FLAG_DEFRAG, so the
    kernel reassembles IP fragments before the port sees them, and fragments whose
    datagram is incomplete on that node never arrive. libpcap reads the interface
    without fanout. phy_mac=1 gives the port the interface's MAC, so Spike's MAC filter
    applies.
    """
    return [
        "--no-huge", "--no-pci", "--no-shconf", "-m", "512", "--no-telemetry",
        "--file-prefix", file_prefix, "-l", "0,1",
        "--vdev", "net_pcap0,iface=eth0,phy_mac=1",
    ]


def render_config(lab, index):
    """Return the dataplane config of Spike node `index`."""
    spike = lab.spikes[index]
    file_prefix = f"{lab.prefix.rstrip('-')}-{spike.name}"
    quoted = ", ".join(json.dumps(arg) for arg in eal_args(file_prefix))
    lines = [
        "# Generated by tests/live/fragments_test.py for one run.",
        "[node]",
        f"mac = {json.dumps(spike.mac)}",
        f"ipv4 = {json.dumps(spike.underlay_address)}",
        f"gateway_mac = {json.dumps(lab.router_mac)}",
        f"vtep_mac = {json.dumps(SPIKE_VTEP_MAC)}",
        "mtu = 1500",
        "",
        "[hash]",
        f"key = {json.dumps(HASH_KEY)}",
        "",
        "[conntrack]",
        "capacity = 4096",
        "fragment_capacity = 1024",
        "",
        "[dpdk]",
        f"eal_args = [{quoted}]",
        'port = "net_pcap0"',
        "workers = 1",
        "",
        "[cluster]",
        f"redirect_vni = {REDIRECT_VNI}",
    ]
    for member in lab.spikes:
        lines += ["", "[[cluster.node]]", f"address = {json.dumps(member.underlay_address)}",
                  f"mac = {json.dumps(member.mac)}"]
    lines += [
        "",
        "[[service]]",
        'name = "udp"',
        f"vip = {json.dumps(VIP)}",
        'protocol = "udp"',
        f"port = {SERVICE_PORT}",
        'hash = "5-tuple"',
    ]
    for node in lab.nodes:
        lines += [
            "",
            "[[service.backend]]",
            f"name = {json.dumps(node.name)}",
            f"address = {json.dumps(node.underlay_address)}",
            f"vtep_mac = {json.dumps(node.vtep_mac)}",
            f"next_hop_mac = {json.dumps(node.underlay_mac)}",
        ]
    return "\n".join(lines) + "\n"


class Dataplane:
    """One spike-dataplane process in a Spike node's namespace."""

    def __init__(self, lab, index):
        self.lab = lab
        self.index = index
        self.name = lab.spikes[index].name
        self.config_path = lab.workdir / f"{self.name}.toml"
        self.counters_path = lab.workdir / f"{self.name}-counters.json"
        self.stdout_path = lab.workdir / f"{self.name}.stdout"
        self.stderr_path = lab.workdir / f"{self.name}.log"
        self.process = None
        self.stderr = None

    def start(self):
        if not DEFAULT_BINARY.exists():
            raise LabError(f"{DEFAULT_BINARY} not found: run cargo build --release")
        self.config_path.write_text(render_config(self.lab, self.index), encoding="utf-8")
        runtime = self.lab.workdir / f"{self.name}-runtime"
        runtime.mkdir(exist_ok=True)
        with open(self.stdout_path, "w", encoding="utf-8") as stdout:
            self.process = self.lab.spawn(
                self.lab.spikes[self.index].namespace,
                [
                    str(DEFAULT_BINARY), "--config", str(self.config_path),
                    "--counters-file", str(self.counters_path),
                    "--counters-interval-ms", str(COUNTERS_INTERVAL_MS),
                ],
                stdout=stdout,
                stderr=subprocess.PIPE,
                text=True,
                env=dict(os.environ, RUNTIME_DIRECTORY=str(runtime)),
            )
        self.stderr = LineWatcher(self.process.stderr, self.stderr_path)

    def wait_started(self):
        self.stderr.wait_for("forwarding started", START_TIMEOUT_S, self.name)

    def counters(self):
        """Return counters that include all traffic sent so far."""
        time.sleep(3 * COUNTERS_INTERVAL_MS / 1000)
        try:
            return json.loads(self.counters_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError) as error:
            raise LabError(f"cannot read {self.counters_path}: {error}") from error

    def stop(self):
        code = self.lab.stop(self.process)
        self.stderr.join(5.0)
        return code, parse_counter_lines(self.stdout_path.read_text(encoding="utf-8"))


def start_servers(lab):
    """Start the UDP server of each pod; return their line watchers."""
    watchers = []
    for node in lab.nodes:
        pod = node.pods[0]
        process = lab.spawn(
            pod.namespace,
            [sys.executable, str(Path(__file__).resolve()), "serve",
             "--node", node.name, "--port", str(SERVICE_PORT)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        watcher = LineWatcher(process.stdout, lab.workdir / f"{node.name}-{pod.name}.log")
        watcher.wait_for("listening", SERVER_START_TIMEOUT_S, f"UDP server in {pod.namespace}")
        watchers.append(watcher)
    return watchers


def send_datagrams(lab, tag, flows, datagrams):
    """Send from the client; return the list of datagrams it sent."""
    argv = [
        sys.executable, str(Path(__file__).resolve()), "send",
        "--vip", VIP, "--port", str(SERVICE_PORT), "--source", CLIENT_ADDRESS,
        "--flows", str(flows), "--datagrams", str(datagrams), "--tag", str(tag),
        "--interval", str(SEND_INTERVAL_S),
    ]
    output = run(netns_exec(lab.client_ns, argv))
    return json.loads(output)


def received(watchers):
    """Return every datagram the pod servers printed, as dictionaries."""
    datagrams = []
    for watcher in watchers:
        for line in list(watcher.lines):
            parts = line.split()
            if len(parts) == 4:
                node, length, digest, source_port = parts
                datagrams.append(
                    {"node": node, "length": int(length), "sha256": digest,
                     "source_port": int(source_port)}
                )
    return datagrams


def find_designated(lab, dataplanes):
    """Send a probe datagram with its fragments split over both nodes.

    Returns the index of the designated node, the one that does not redirect, and
    whether exactly one node redirected.
    """
    route(lab, 0, 1)
    send_datagrams(lab, tag=9, flows=1, datagrams=1)
    time.sleep(0.5)
    redirected = [
        dataplane.counters()["selections"]["redirected_to_designated_node"]
        for dataplane in dataplanes
    ]
    # Node 0 got the first fragment: a redirect there means node 1 is designated.
    designated = 1 if redirected[0] > 0 else 0
    print(f"probe: redirects per node {redirected}, designated spike{designated + 1}")
    return designated, sum(1 for count in redirected if count > 0) == 1


def check_round(checks, lab, dataplanes, watchers, designated, first_to, tag):
    """Send datagrams whose first fragments reach Spike node `first_to` and the rest the
    other node; check what arrives and the counters."""
    where = "the designated node" if first_to == designated else "the other node"
    print(f"round {tag}: first fragments to spike{first_to + 1} ({where})", flush=True)
    route(lab, first_to, 1 - first_to)
    for watcher in watchers:
        watcher.lines.clear()
    before = [dataplane.counters() for dataplane in dataplanes]
    sent = send_datagrams(lab, tag=tag, flows=FLOWS, datagrams=DATAGRAMS_PER_FLOW)
    time.sleep(RECEIVE_GRACE_S)
    got = received(watchers)

    expected = {(item["sha256"], item["length"]) for item in sent}
    arrived = [(item["sha256"], item["length"]) for item in got]
    complete = [entry for entry in arrived if entry in expected]
    checks.check(
        len(sent) == FLOWS * DATAGRAMS_PER_FLOW,
        f"client sent {FLOWS * DATAGRAMS_PER_FLOW} datagrams of "
        f"{MIN_DATAGRAM_BYTES}-{MAX_DATAGRAM_BYTES} bytes",
        f"it sent {len(sent)}",
    )
    checks.check(
        len(set(complete)) == len(expected) and len(arrived) == len(expected),
        f"first fragments at {where}: all {len(expected)} datagrams reached a pod whole "
        "and unchanged",
        f"{len(set(complete))} matched, {len(arrived)} arrived; see {lab.workdir}",
    )
    nodes_by_port = {}
    for item in got:
        nodes_by_port.setdefault(item["source_port"], set()).add(item["node"])
    split = {port: nodes for port, nodes in nodes_by_port.items() if len(nodes) > 1}
    checks.check(not split, f"each of {len(nodes_by_port)} flows reached one node",
                 f"split flows: {split}")

    after = [dataplane.counters() for dataplane in dataplanes]
    check_counters(checks, before, after, designated, len(sent))


def delta(before, after, section, name):
    if section is None:
        return after[name] - before[name]
    return after[section][name] - before[section][name]


def check_counters(checks, before, after, designated, datagrams):
    other = 1 - designated
    redirected = delta(before[other], after[other], "selections",
                       "redirected_to_designated_node")
    checks.check(
        redirected >= datagrams,
        f"spike{other + 1} redirected fragments of all {datagrams} datagrams ({redirected})",
        f"it redirected {redirected}",
    )
    taken_in = delta(before[designated], after[designated], None, "redirected_in")
    checks.check(
        taken_in >= redirected,
        f"spike{designated + 1} took in every redirected frame ({taken_in})",
        f"{taken_in} taken in for {redirected} redirects (a piece counts once)",
    )
    followed = delta(before[designated], after[designated], "selections",
                     "fragment_follows_first")
    held = delta(before[designated], after[designated], None, "held")
    released = delta(before[designated], after[designated], None, "held_released")
    checks.check(
        followed >= datagrams and released == held,
        f"spike{designated + 1} sent {followed} non-first fragments after their first "
        f"fragment, {held} of them held until it came",
        f"{followed} followed, {held} held, {released} released",
    )
    for index in (0, 1):
        drops = {
            reason: delta(before[index], after[index], "drops", reason)
            for reason in ("fragment_without_record", "redirect_malformed",
                           "redirect_loop", "redirect_not_service")
        }
        drops["held_dropped"] = delta(before[index], after[index], None, "held_dropped")
        lost = {reason: count for reason, count in drops.items() if count}
        checks.check(not lost, f"spike{index + 1} dropped no fragment", f"{lost}")


def run_checks(checks, lab):
    lab.create()
    prepare(lab)
    watchers = start_servers(lab)
    dataplanes = [Dataplane(lab, index) for index in (0, 1)]
    for dataplane in dataplanes:
        dataplane.start()
    for dataplane in dataplanes:
        try:
            dataplane.wait_started()
        except LabError as error:
            checks.check(False, f"{dataplane.name} starts", str(error))
            return
        checks.check(True, f"{dataplane.name} starts and logs `forwarding started`")

    designated, found = find_designated(lab, dataplanes)
    if not checks.check(found, "a probe datagram shows which node is designated",
                        "exactly one node must redirect its fragments"):
        return
    check_round(checks, lab, dataplanes, watchers, designated, designated, tag=1)
    check_round(checks, lab, dataplanes, watchers, designated, 1 - designated, tag=2)

    for dataplane in dataplanes:
        code, final = dataplane.stop()
        checks.check(
            code == 0 and "redirected_in" in final,
            f"{dataplane.name} exits 0 on SIGTERM and prints redirected_in",
            f"exit code {code}, counters {sorted(final)[:5]}",
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", help="namespace name prefix, unique per run")
    parser.add_argument("--workdir", type=Path, help="configs, logs and counters")
    subcommands = parser.add_subparsers(dest="command")
    serve_parser = subcommands.add_parser("serve", help="pod role: UDP server")
    serve_parser.add_argument("--node", required=True)
    serve_parser.add_argument("--port", type=int, required=True)
    send_parser = subcommands.add_parser("send", help="client role: send datagrams")
    send_parser.add_argument("--vip", required=True)
    send_parser.add_argument("--port", type=int, required=True)
    send_parser.add_argument("--source", required=True)
    send_parser.add_argument("--flows", type=int, required=True)
    send_parser.add_argument("--datagrams", type=int, required=True)
    send_parser.add_argument("--tag", type=int, required=True)
    send_parser.add_argument("--interval", type=float, required=True)
    args = parser.parse_args()
    if args.command == "serve":
        return serve(args)
    if args.command == "send":
        return send(args)
    if not args.prefix or not args.workdir:
        parser.error("--prefix and --workdir are required")

    exit_on_signals(TIME_LIMIT_S)
    args.workdir.mkdir(parents=True, exist_ok=True)
    checks = Checks()
    # Two Spike nodes, two backend nodes with one pod each. The VIP's routes are this
    # test's own.
    lab = Lab(args.prefix, args.workdir, node_count=2, pods_per_node=1, spike_count=2,
              static_vip_route=False)
    try:
        run_checks(checks, lab)
    except LabError as error:
        checks.check(False, "fragment live test ran to the end", str(error))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        lab.destroy()
        problems = lab.leftovers()
        checks.check(not problems, "no namespace or process of the run is left",
                     "; ".join(problems))
        print(f"logs, configs and counters: {args.workdir}")
        print(f"{checks.passed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
