"""Live test: fragments of one datagram reach two Spike nodes and one backend.

tests/live/run.sh runs this as root after the main live test. Layout, every name
prefixed with the run's prefix:

    client 198.51.100.10 ---- router: 198.51.100.1, bridge br0 192.0.2.254
        spike1 eth0 192.0.2.1    spike-dataplane on net_pcap
        spike2 eth0 192.0.2.2    spike-dataplane on net_pcap
        node1  eth0 192.0.2.11   flannel.1 (VNI 1), DNAT of VIP:5300 to node1-pod1
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
fragments before their redirected first fragment and holds them. The last line is `N passed, M failed`; the exit code is 1 when
anything failed.
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
    LabError,
    LineWatcher,
    exit_on_signals,
    interface_mac,
    list_namespaces,
    netns_exec,
    pid_is_running,
    remove_namespaces,
    run,
)

VIP = "203.0.113.53"
SERVICE_PORT = 5300
CLIENT_ADDRESS = "198.51.100.10"
ROUTER_CLIENT_ADDRESS = "198.51.100.1"
ROUTER_UNDERLAY_ADDRESS = "192.0.2.254"
SPIKE_ADDRESSES = ["192.0.2.1", "192.0.2.2"]
NODE_ADDRESSES = ["192.0.2.11", "192.0.2.12"]
REDIRECT_VNI = 4097
FLANNEL_MTU = 1450
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
STOP_TIMEOUT_S = 5.0
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


class FragmentLab:
    """Namespaces, links and processes of one run; `destroy` removes all of them."""

    def __init__(self, prefix, workdir):
        self.prefix = prefix
        self.workdir = Path(workdir)
        self.client = f"{prefix}client"
        self.router = f"{prefix}router"
        self.spikes = [f"{prefix}spike{index}" for index in (1, 2)]
        self.nodes = [f"{prefix}node{index}" for index in (1, 2)]
        self.pods = [f"{node}-pod1" for node in self.nodes]
        self.processes = []
        self.survivors = []
        self.router_mac = ""
        self.spike_macs = []
        self.node_macs = []
        self.vtep_macs = []

    def namespaces(self):
        return [self.client, self.router, *self.spikes, *self.nodes, *self.pods]

    def sysctl(self, namespace, key, value):
        run(netns_exec(namespace, ["sysctl", "-qw", f"{key}={value}"]))

    def veth(self, namespace, name, peer_namespace, peer_name):
        run(
            [
                "ip", "-n", namespace, "link", "add", name, "type", "veth",
                "peer", "name", peer_name, "netns", peer_namespace,
            ]
        )

    def create(self):
        for namespace in self.namespaces():
            run(["ip", "netns", "add", namespace])
            # The client's packets arrive on flannel.1, so reverse-path filtering is off.
            self.sysctl(namespace, "net.ipv4.conf.all.rp_filter", "0")
            self.sysctl(namespace, "net.ipv4.conf.default.rp_filter", "0")
            self.sysctl(namespace, "net.ipv6.conf.all.disable_ipv6", "1")
            self.sysctl(namespace, "net.ipv6.conf.default.disable_ipv6", "1")
            run(["ip", "-n", namespace, "link", "set", "lo", "up"])
        self.create_router()
        self.create_client()
        for index, spike in enumerate(self.spikes):
            self.attach(spike, f"s{index + 1}", SPIKE_ADDRESSES[index])
            # The kernel sees every frame net_pcap receives: it must not forward.
            self.sysctl(spike, "net.ipv4.ip_forward", "0")
            self.spike_macs.append(interface_mac(spike, "eth0"))
        for index, node in enumerate(self.nodes):
            self.create_node(index, node)

    def create_router(self):
        ns = self.router
        self.sysctl(ns, "net.ipv4.ip_forward", "1")
        run(["ip", "-n", ns, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", ns, "addr", "add", f"{ROUTER_UNDERLAY_ADDRESS}/24", "dev", "br0"])
        self.router_mac = interface_mac(ns, "br0")
        run(["ip", "-n", ns, "link", "set", "br0", "address", self.router_mac, "up"])
        # Non-first fragments (offset above 0) get a mark that selects their own table.
        ruleset = (
            "table ip spike_fragments {\n"
            "    chain prerouting {\n"
            "        type filter hook prerouting priority mangle; policy accept;\n"
            f"        ip daddr {VIP} ip frag-off & 0x1fff != 0 "
            f"meta mark set {FRAGMENT_MARK}\n"
            "    }\n"
            "}\n"
        )
        run(netns_exec(ns, ["nft", "-f", "-"]), input_text=ruleset)
        run(
            [
                "ip", "-n", ns, "rule", "add", "fwmark", str(FRAGMENT_MARK),
                "table", str(FRAGMENT_TABLE),
            ]
        )

    def create_client(self):
        self.veth(self.router, "c0", self.client, "eth0")
        run(["ip", "-n", self.router, "addr", "add", f"{ROUTER_CLIENT_ADDRESS}/24", "dev", "c0"])
        run(["ip", "-n", self.router, "link", "set", "c0", "up"])
        run(["ip", "-n", self.client, "addr", "add", f"{CLIENT_ADDRESS}/24", "dev", "eth0"])
        run(["ip", "-n", self.client, "link", "set", "eth0", "up"])
        run(["ip", "-n", self.client, "route", "add", "default", "via", ROUTER_CLIENT_ADDRESS])
        # A veth leaves checksums to offload; real NICs deliver them computed.
        run(netns_exec(self.client, ["ethtool", "-K", "eth0", "tx", "off"]))

    def attach(self, namespace, router_port, address):
        self.veth(self.router, router_port, namespace, "eth0")
        run(["ip", "-n", self.router, "link", "set", router_port, "master", "br0", "up"])
        run(["ip", "-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0"])
        run(["ip", "-n", namespace, "link", "set", "eth0", "up"])

    def create_node(self, index, node):
        number = index + 1
        address = NODE_ADDRESSES[index]
        self.sysctl(node, "net.ipv4.ip_forward", "1")
        self.attach(node, f"n{number}", address)
        run(["ip", "-n", node, "route", "add", "default", "via", ROUTER_UNDERLAY_ADDRESS])
        self.node_macs.append(interface_mac(node, "eth0"))
        run(
            [
                "ip", "-n", node, "link", "add", "flannel.1", "type", "vxlan", "id", "1",
                "local", address, "dev", "eth0", "dstport", "8472", "nolearning",
            ]
        )
        run(["ip", "-n", node, "link", "set", "flannel.1", "mtu", str(FLANNEL_MTU), "up"])
        run(["ip", "-n", node, "addr", "add", f"10.244.{number}.0/32", "dev", "flannel.1"])
        self.vtep_macs.append(interface_mac(node, "flannel.1"))

        pod = self.pods[index]
        run(["ip", "-n", node, "link", "add", "cni0", "type", "bridge"])
        run(["ip", "-n", node, "addr", "add", f"10.244.{number}.1/24", "dev", "cni0"])
        run(["ip", "-n", node, "link", "set", "cni0", "mtu", str(FLANNEL_MTU), "up"])
        self.veth(node, "vethpod1", pod, "eth0")
        run(["ip", "-n", node, "link", "set", "vethpod1", "mtu", str(FLANNEL_MTU)])
        run(["ip", "-n", node, "link", "set", "vethpod1", "master", "cni0", "up"])
        run(["ip", "-n", pod, "link", "set", "eth0", "mtu", str(FLANNEL_MTU)])
        run(["ip", "-n", pod, "addr", "add", f"10.244.{number}.2/24", "dev", "eth0"])
        run(["ip", "-n", pod, "link", "set", "eth0", "up"])
        run(["ip", "-n", pod, "route", "add", "default", "via", f"10.244.{number}.1"])
        # kube-proxy's part: the VIP's port goes to the node's pod.
        ruleset = (
            "table ip spike_lab {\n"
            "    chain prerouting {\n"
            "        type nat hook prerouting priority dstnat; policy accept;\n"
            f"        ip daddr {VIP} udp dport {SERVICE_PORT} dnat to 10.244.{number}.2\n"
            "    }\n"
            "}\n"
        )
        run(netns_exec(node, ["nft", "-f", "-"]), input_text=ruleset)

    def route(self, first_to, rest_to):
        """Route the VIP to Spike node `first_to` and its non-first fragments to `rest_to`."""
        run(
            [
                "ip", "-n", self.router, "route", "replace", f"{VIP}/32",
                "via", SPIKE_ADDRESSES[first_to], "dev", "br0",
            ]
        )
        run(
            [
                "ip", "-n", self.router, "route", "replace", f"{VIP}/32",
                "via", SPIKE_ADDRESSES[rest_to], "dev", "br0", "table", str(FRAGMENT_TABLE),
            ]
        )

    def spawn(self, namespace, argv, **popen_args):
        process = subprocess.Popen(netns_exec(namespace, argv), **popen_args)
        self.processes.append(process)
        return process

    def stop(self, process):
        """Send SIGTERM, then SIGKILL after STOP_TIMEOUT_S; return the exit code."""
        if process.poll() is not None:
            return process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def destroy(self):
        for process in reversed(self.processes):
            try:
                self.stop(process)
            except OSError:
                continue
        self.survivors += remove_namespaces(self.prefix)

    def leftovers(self):
        problems = []
        namespaces = list_namespaces(self.prefix)
        if namespaces:
            problems.append(f"namespaces still present: {', '.join(namespaces)}")
        running = [process.pid for process in self.processes if pid_is_running(process.pid)]
        if running:
            problems.append(f"started processes still running: {running}")
        if self.survivors:
            problems.append(f"processes that survived SIGKILL: {self.survivors}")
        return problems


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
    file_prefix = f"{lab.prefix.rstrip('-')}-spike{index + 1}"
    quoted = ", ".join(json.dumps(arg) for arg in eal_args(file_prefix))
    lines = [
        "# Generated by tests/live/fragments_test.py for one run.",
        "[node]",
        f"mac = {json.dumps(lab.spike_macs[index])}",
        f"ipv4 = {json.dumps(SPIKE_ADDRESSES[index])}",
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
    for address, mac in zip(SPIKE_ADDRESSES, lab.spike_macs):
        lines += ["", "[[cluster.node]]", f"address = {json.dumps(address)}",
                  f"mac = {json.dumps(mac)}"]
    lines += [
        "",
        "[[service]]",
        'name = "udp"',
        f"vip = {json.dumps(VIP)}",
        'protocol = "udp"',
        f"port = {SERVICE_PORT}",
        'hash = "5-tuple"',
    ]
    for number, (address, vtep, mac) in enumerate(
        zip(NODE_ADDRESSES, lab.vtep_macs, lab.node_macs), 1
    ):
        lines += [
            "",
            "[[service.backend]]",
            f'name = "node{number}"',
            f"address = {json.dumps(address)}",
            f"vtep_mac = {json.dumps(vtep)}",
            f"next_hop_mac = {json.dumps(mac)}",
        ]
    return "\n".join(lines) + "\n"


class Dataplane:
    """One spike-dataplane process in a Spike node's namespace."""

    def __init__(self, lab, index):
        self.lab = lab
        self.index = index
        self.name = f"spike{index + 1}"
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
                self.lab.spikes[self.index],
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
    for index, pod in enumerate(lab.pods):
        process = lab.spawn(
            pod,
            [sys.executable, str(Path(__file__).resolve()), "serve",
             "--node", f"node{index + 1}", "--port", str(SERVICE_PORT)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        watcher = LineWatcher(process.stdout, lab.workdir / f"node{index + 1}-pod1.log")
        watcher.wait_for("listening", SERVER_START_TIMEOUT_S, f"UDP server in {pod}")
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
    output = run(netns_exec(lab.client, argv))
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
    lab.route(0, 1)
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
    lab.route(first_to, 1 - first_to)
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
    lab = FragmentLab(args.prefix, args.workdir)
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
