"""Network namespaces that put Spike between a client and three flannel nodes.

The live demo (scripts/demo.sh) and the live test (tests/live/run.sh) share this
module. Every address lives inside namespaces that `Lab.create` makes and
`Lab.destroy` removes, and every process runs inside one of them, so nothing
reaches the host's own network.

Layout, with the run's prefix (`spk<PID>-` in the scripts) before each name:

    client 198.51.100.10 ----- router: 198.51.100.1, bridge br0 192.0.2.254
                                 | br0 joins the underlay links below
        spike  eth0 192.0.2.1    the dataplane on net_af_packet, no VIP here
        node1  eth0 192.0.2.11   flannel.1 (VNI 1, port 8472), cni0 10.244.1.1/24
               node1-pod1 10.244.1.2, node1-pod2 10.244.1.3
        node2  eth0 192.0.2.12   ... 10.244.2.0/24
        node3  eth0 192.0.2.13   ... 10.244.3.0/24

The router routes the VIP to Spike. Spike wraps each packet in VXLAN as
flannel does and sends it to a node's flannel.1. The node's nftables DNAT
(like kube-proxy with externalTrafficPolicy Local) picks one of its two pods,
and the reply goes from the node through the router straight to the client.

With `spike_count` above 1 the single `spike` namespace becomes `spike1`,
`spike2`, ... at 192.0.2.1, 192.0.2.2, ..., and the router hashes flows over
them by ECMP on the layer-4 header (`fib_multipath_hash_policy=1`). With
`static_vip_route` the router gets a static multipath route to the VIP;
without it the route must come from BGP (scripts/lab/bgp.py).
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

VIP = "203.0.113.80"
SERVICE_PORT = 80
CLIENT_ADDRESS = "198.51.100.10"
ROUTER_CLIENT_ADDRESS = "198.51.100.1"
CLIENT_PREFIX_LEN = 24
UNDERLAY_PREFIX_LEN = 24
ROUTER_UNDERLAY_ADDRESS = "192.0.2.254"
SPIKE_UNDERLAY_ADDRESS = "192.0.2.1"
# Maximum number of Spike nodes: their addresses 192.0.2.1 up to .9 stay below the
# backend nodes' 192.0.2.11 and up.
MAX_SPIKE_NODES = 9
# flannel's defaults: VNI 1 on the Linux VXLAN port 8472, MTU 1450 on a 1500 underlay.
VXLAN_VNI = 1
VXLAN_PORT = 8472
FLANNEL_MTU = 1450

ROLES_SCRIPT = Path(__file__).resolve().parent / "roles.py"
# Seconds a pod server may take to print that it listens.
POD_START_TIMEOUT_S = 10.0
# Seconds a process gets to exit after SIGTERM before SIGKILL.
STOP_TIMEOUT_S = 5.0


class LabError(Exception):
    """A command that builds or runs the topology failed."""


@dataclass
class Pod:
    name: str
    namespace: str
    address: str


@dataclass
class SpikeNode:
    """A Spike node: a namespace with the dataplane on its eth0."""

    name: str
    namespace: str
    underlay_address: str
    # Port of the router's bridge that links to this node's eth0.
    router_port: str
    # Prefix of this node's files in the work directory, empty for a single node.
    file_stem: str
    mac: str = ""


@dataclass
class Node:
    """A flannel node: the backend that Spike's config names."""

    name: str
    namespace: str
    underlay_address: str
    pod_subnet_prefix: str
    underlay_mac: str = ""
    vtep_mac: str = ""
    pods: list = field(default_factory=list)


def run(argv, input_text=None, check=True):
    """Run a command and return its stdout. Raises LabError with its stderr on failure."""
    result = subprocess.run(
        argv, input=input_text, capture_output=True, text=True, check=False
    )
    if check and result.returncode != 0:
        raise LabError(
            f"command failed with exit code {result.returncode}: {' '.join(argv)}\n"
            f"{result.stderr.strip()}"
        )
    return result.stdout


def netns_exec(namespace, argv):
    """Return argv prefixed so that it runs inside a namespace."""
    return ["ip", "netns", "exec", namespace, *argv]


def list_namespaces(prefix):
    """Names of the existing network namespaces that start with prefix."""
    output = run(["ip", "-j", "netns", "list"])
    entries = json.loads(output) if output.strip() else []
    return [entry["name"] for entry in entries if entry["name"].startswith(prefix)]


def pid_is_running(pid):
    """Return whether pid names a live process. A zombie counts as gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Lab:
    """The namespaces, links and processes of one run.

    `prefix` must be unique per run (the scripts use `spk<shell PID>-`), because
    `destroy` removes every namespace whose name starts with it.
    """

    def __init__(
        self, prefix, workdir, node_count=3, pods_per_node=2, spike_count=1,
        static_vip_route=True,
    ):
        if not 1 <= spike_count <= MAX_SPIKE_NODES:
            raise LabError(f"spike_count {spike_count} is invalid: use 1 to {MAX_SPIKE_NODES}")
        self.prefix = prefix
        self.workdir = Path(workdir)
        self.client_ns = f"{prefix}client"
        self.router_ns = f"{prefix}router"
        self.static_vip_route = static_vip_route
        self.spikes = []
        for index in range(1, spike_count + 1):
            # One Spike node keeps the names of the one-node lab: namespace `spike`,
            # files without a stem.
            name = "spike" if spike_count == 1 else f"spike{index}"
            self.spikes.append(
                SpikeNode(
                    name=name,
                    namespace=f"{prefix}{name}",
                    underlay_address=f"192.0.2.{index}",
                    router_port=f"s{index - 1}",
                    file_stem="" if spike_count == 1 else f"{name}-",
                )
            )
        self.spike_ns = self.spikes[0].namespace
        self.spike_mac = ""
        self.spike_link = ("", "")
        self.router_mac = ""
        self.nodes = []
        for index in range(1, node_count + 1):
            node = Node(
                name=f"node{index}",
                namespace=f"{prefix}node{index}",
                underlay_address=f"192.0.2.{10 + index}",
                pod_subnet_prefix=f"10.244.{index}",
            )
            for pod_index in range(1, pods_per_node + 1):
                node.pods.append(
                    Pod(
                        name=f"pod{pod_index}",
                        namespace=f"{prefix}node{index}-pod{pod_index}",
                        # flannel's host-local IPAM gives cni0 .1 and pods .2 upward.
                        address=f"10.244.{index}.{1 + pod_index}",
                    )
                )
            self.nodes.append(node)
        self.processes = []
        self.started_pids = []
        self.survivors = []
        # Files outside the work directory, such as snapshot rings in /dev/shm, that
        # `destroy` removes.
        self.temporary_files = []

    # Building.

    def create(self):
        """Create every namespace, link, address, route and nftables rule."""
        for namespace in self.all_namespaces():
            run(["ip", "netns", "add", namespace])
            # Loose or strict reverse-path filtering drops the client's packets that
            # arrive on flannel.1, so it is off everywhere in the lab.
            self.sysctl(namespace, "net.ipv4.conf.all.rp_filter", "0")
            self.sysctl(namespace, "net.ipv4.conf.default.rp_filter", "0")
            # The lab is IPv4 only, and IPv6 would add router solicitations to captures.
            self.sysctl(namespace, "net.ipv6.conf.all.disable_ipv6", "1")
            self.sysctl(namespace, "net.ipv6.conf.default.disable_ipv6", "1")
            run(["ip", "-n", namespace, "link", "set", "lo", "up"])
        self.create_router()
        self.create_client()
        for spike in self.spikes:
            self.create_spike(spike)
        if self.static_vip_route:
            self.route_vip(self.spikes)
        for node in self.nodes:
            self.create_node(node)

    def all_namespaces(self):
        namespaces = [self.client_ns, self.router_ns]
        namespaces.extend(spike.namespace for spike in self.spikes)
        for node in self.nodes:
            namespaces.append(node.namespace)
            namespaces.extend(pod.namespace for pod in node.pods)
        return namespaces

    def sysctl(self, namespace, key, value):
        run(netns_exec(namespace, ["sysctl", "-qw", f"{key}={value}"]))

    def add_veth(self, namespace, name, peer_namespace, peer_name):
        run(
            [
                "ip", "-n", namespace, "link", "add", name, "type", "veth",
                "peer", "name", peer_name, "netns", peer_namespace,
            ]
        )

    def create_router(self):
        ns = self.router_ns
        self.sysctl(ns, "net.ipv4.ip_forward", "1")
        # ECMP over the Spike nodes hashes on addresses and ports. With the default
        # policy 0 (addresses only) every flow of the one client takes one path.
        self.sysctl(ns, "net.ipv4.fib_multipath_hash_policy", "1")
        run(["ip", "-n", ns, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", ns, "addr", "add", f"{ROUTER_UNDERLAY_ADDRESS}/24", "dev", "br0"])
        # A bridge takes the lowest MAC of its ports unless its own is set explicitly,
        # and Spike's gateway_mac must not change as ports join.
        self.router_mac = interface_mac(ns, "br0")
        run(["ip", "-n", ns, "link", "set", "br0", "address", self.router_mac, "up"])

    def attach_to_underlay(self, namespace, router_port):
        """Link namespace's eth0 to a new port of the router's bridge."""
        self.add_veth(self.router_ns, router_port, namespace, "eth0")
        run(["ip", "-n", self.router_ns, "link", "set", router_port, "master", "br0", "up"])
        run(["ip", "-n", namespace, "link", "set", "eth0", "up"])

    def create_client(self):
        ns = self.client_ns
        self.add_veth(self.router_ns, "c0", ns, "eth0")
        run(
            [
                "ip", "-n", self.router_ns, "addr", "add",
                f"{ROUTER_CLIENT_ADDRESS}/{CLIENT_PREFIX_LEN}", "dev", "c0",
            ]
        )
        run(["ip", "-n", self.router_ns, "link", "set", "c0", "up"])
        run(["ip", "-n", ns, "addr", "add", f"{CLIENT_ADDRESS}/{CLIENT_PREFIX_LEN}", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run(["ip", "-n", ns, "route", "add", "default", "via", ROUTER_CLIENT_ADDRESS])
        # A veth passes TCP packets with the checksum left for offload (CHECKSUM_PARTIAL).
        # The router forwards them so, and net_af_packet hands Spike those bytes as
        # they are. The node's conntrack then finds the checksum bad and marks the
        # packet invalid, so DNAT skips it and the node routes it back toward the VIP
        # until its TTL runs out. A NIC never delivers such frames, so the client
        # computes its checksums in software here.
        run(netns_exec(ns, ["ethtool", "-K", "eth0", "tx", "off"]))

    def create_spike(self, spike):
        ns = spike.namespace
        # The kernel receives every frame net_af_packet receives, so it must neither
        # forward VIP traffic nor own the VIP. It only replies to ARP for its underlay
        # address and carries the node's BGP session.
        self.sysctl(ns, "net.ipv4.ip_forward", "0")
        self.attach_to_underlay(ns, spike.router_port)
        run(
            [
                "ip", "-n", ns, "addr", "add",
                f"{spike.underlay_address}/{UNDERLAY_PREFIX_LEN}", "dev", "eth0",
            ]
        )
        spike.mac = interface_mac(ns, "eth0")
        if spike is self.spikes[0]:
            self.spike_mac = spike.mac
            # Captures of Spike's traffic run on the router's end of Spike's link.
            # net_af_packet sends with PACKET_QDISC_BYPASS, which skips the kernel's
            # capture taps, so a capture inside the spike namespace misses Spike's
            # frames.
            self.spike_link = (self.router_ns, spike.router_port)

    def route_vip(self, spikes):
        """Route the VIP from the router to `spikes`, by ECMP when there are several."""
        argv = ["ip", "-n", self.router_ns, "route", "replace", f"{VIP}/32"]
        if len(spikes) == 1:
            argv += ["via", spikes[0].underlay_address, "dev", "br0"]
        else:
            for spike in spikes:
                argv += ["nexthop", "via", spike.underlay_address, "dev", "br0"]
        run(argv)

    def vip_next_hops(self):
        """Return the router's next-hop addresses for the VIP, empty without a route."""
        output = run(["ip", "-j", "-n", self.router_ns, "route", "show", f"{VIP}/32"])
        routes = json.loads(output) if output.strip() else []
        hops = []
        for route in routes:
            if "gateway" in route:
                hops.append(route["gateway"])
            hops.extend(hop["gateway"] for hop in route.get("nexthops", []) if "gateway" in hop)
        return sorted(hops)

    def create_node(self, node):
        ns = node.namespace
        self.sysctl(ns, "net.ipv4.ip_forward", "1")
        self.attach_to_underlay(ns, f"n{node.name[len('node'):]}")
        run(
            [
                "ip", "-n", ns, "addr", "add",
                f"{node.underlay_address}/{UNDERLAY_PREFIX_LEN}", "dev", "eth0",
            ]
        )
        run(["ip", "-n", ns, "route", "add", "default", "via", ROUTER_UNDERLAY_ADDRESS])
        node.underlay_mac = interface_mac(ns, "eth0")

        # flannel's VXLAN device, created the way its backend does.
        run(
            [
                "ip", "-n", ns, "link", "add", "flannel.1", "type", "vxlan",
                "id", str(VXLAN_VNI), "local", node.underlay_address, "dev", "eth0",
                "dstport", str(VXLAN_PORT), "nolearning",
            ]
        )
        run(["ip", "-n", ns, "link", "set", "flannel.1", "mtu", str(FLANNEL_MTU)])
        run(
            [
                "ip", "-n", ns, "addr", "add",
                f"{node.pod_subnet_prefix}.0/32", "dev", "flannel.1",
            ]
        )
        run(["ip", "-n", ns, "link", "set", "flannel.1", "up"])
        node.vtep_mac = interface_mac(ns, "flannel.1")

        run(["ip", "-n", ns, "link", "add", "cni0", "type", "bridge"])
        run(["ip", "-n", ns, "addr", "add", f"{node.pod_subnet_prefix}.1/24", "dev", "cni0"])
        run(["ip", "-n", ns, "link", "set", "cni0", "mtu", str(FLANNEL_MTU), "up"])
        for pod in node.pods:
            self.create_pod(node, pod)
        run(netns_exec(ns, ["nft", "-f", "-"]), input_text=dnat_ruleset(node))

    def create_pod(self, node, pod):
        host_side = f"veth{pod.name}"
        self.add_veth(node.namespace, host_side, pod.namespace, "eth0")
        run(["ip", "-n", node.namespace, "link", "set", host_side, "mtu", str(FLANNEL_MTU)])
        run(["ip", "-n", node.namespace, "link", "set", host_side, "master", "cni0", "up"])
        run(["ip", "-n", pod.namespace, "link", "set", "eth0", "mtu", str(FLANNEL_MTU)])
        run(["ip", "-n", pod.namespace, "addr", "add", f"{pod.address}/24", "dev", "eth0"])
        run(["ip", "-n", pod.namespace, "link", "set", "eth0", "up"])
        run(
            [
                "ip", "-n", pod.namespace, "route", "add", "default",
                "via", f"{node.pod_subnet_prefix}.1",
            ]
        )

    # Processes.

    def spawn(self, namespace, argv, new_session=False, **popen_args):
        """Start argv inside namespace and remember it for `stop_all`."""
        process = subprocess.Popen(
            netns_exec(namespace, argv), start_new_session=new_session, **popen_args
        )
        self.processes.append(process)
        self.started_pids.append(process.pid)
        return process

    def start_pods(self):
        """Start each pod's HTTP server and wait until all of them listen."""
        servers = []
        for node in self.nodes:
            for pod in node.pods:
                argv = [
                    sys.executable, str(ROLES_SCRIPT), "serve",
                    "--node", node.name, "--pod", pod.name, "--port", str(SERVICE_PORT),
                ]
                process = self.spawn(
                    pod.namespace,
                    argv,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                log_path = self.workdir / f"{node.name}-{pod.name}.log"
                servers.append((f"{node.name}/{pod.name}", LineWatcher(process.stdout, log_path)))
        for name, watcher in servers:
            watcher.wait_for("listening", POD_START_TIMEOUT_S, f"pod server {name}")

    def stop(self, process, timeout_s=STOP_TIMEOUT_S):
        """Send SIGTERM to a started process (its group if it leads one), then SIGKILL."""
        if process.poll() is not None:
            return process.returncode
        try:
            leads_group = os.getpgid(process.pid) == process.pid
        except ProcessLookupError:
            return process.wait()
        signal_process(process, signal.SIGTERM, leads_group)
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            signal_process(process, signal.SIGKILL, leads_group)
            return process.wait()

    def stop_all(self):
        for process in reversed(self.processes):
            try:
                self.stop(process)
            except (OSError, ProcessLookupError):
                continue

    def destroy(self):
        """Stop every process this lab started and delete every namespace of the prefix.

        Safe to call more than once and after a partial `create`.
        """
        self.stop_all()
        self.survivors += remove_namespaces(self.prefix)
        for path in self.temporary_files:
            Path(path).unlink(missing_ok=True)

    def leftovers(self):
        """Describe what `destroy` left behind: namespaces, then processes."""
        problems = []
        namespaces = list_namespaces(self.prefix)
        if namespaces:
            problems.append(f"namespaces still present: {', '.join(namespaces)}")
        running = [pid for pid in self.started_pids if pid_is_running(pid)]
        if running:
            problems.append(f"started processes still running: {running}")
        if self.survivors:
            problems.append(f"processes that survived SIGKILL in the namespaces: {self.survivors}")
        remaining = [str(path) for path in self.temporary_files if Path(path).exists()]
        if remaining:
            problems.append(f"files still present: {', '.join(remaining)}")
        return problems

    def describe(self):
        addresses = ", ".join(spike.underlay_address for spike in self.spikes)
        source = "static route" if self.static_vip_route else "BGP"
        lines = [
            f"client    {self.client_ns}: {CLIENT_ADDRESS}, default route via the router",
            f"router    {self.router_ns}: routes {VIP}/32 to Spike at {addresses} ({source})",
        ]
        for spike in self.spikes:
            lines.append(
                f"{spike.name:9} {spike.namespace}: eth0 {spike.underlay_address} "
                f"mac {spike.mac}, ip_forward=0, no VIP"
            )
        for node in self.nodes:
            pods = ", ".join(f"{pod.name} {pod.address}" for pod in node.pods)
            lines.append(
                f"{node.name:9} {node.namespace}: eth0 {node.underlay_address} "
                f"mac {node.underlay_mac}, flannel.1 VtepMAC {node.vtep_mac}, pods {pods}"
            )
        return "\n".join(lines)


def exit_on_signals(time_limit_s):
    """Turn SIGTERM, and SIGALRM after time_limit_s, into SystemExit.

    `finally` blocks then remove the lab, when the run is stopped or hangs.
    """

    def raise_exit(signum, _frame):
        if signum == signal.SIGALRM:
            print(f"time limit of {time_limit_s} s reached, stopping", file=sys.stderr)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, raise_exit)
    signal.signal(signal.SIGALRM, raise_exit)
    signal.alarm(time_limit_s)


def signal_process(process, signum, to_group):
    try:
        if to_group:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
    except ProcessLookupError:
        pass


def remove_namespaces(prefix):
    """Kill every process inside the namespaces of prefix, by PID, and delete them.

    Returns the PIDs that were still inside after SIGKILL. They are looked up while
    the namespaces exist, because a deleted namespace's inode number can be reused.
    """
    namespaces = list_namespaces(prefix)
    for signum in (signal.SIGTERM, signal.SIGKILL):
        pids = pids_in_namespaces(namespaces)
        for pid in pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while any(pid_is_running(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
    survivors = [pid for pid in pids_in_namespaces(namespaces) if pid_is_running(pid)]
    for namespace in namespaces:
        run(["ip", "netns", "del", namespace], check=False)
    return survivors


def pids_in_namespaces(namespaces):
    pids = []
    for namespace in namespaces:
        output = run(["ip", "netns", "pids", namespace], check=False)
        pids.extend(int(pid) for pid in output.split())
    return pids


def interface_mac(namespace, interface):
    output = run(["ip", "-j", "-n", namespace, "link", "show", "dev", interface])
    return json.loads(output)[0]["address"]


def dnat_ruleset(node):
    """nftables rules that send VIP:80 to one of the node's pods at random.

    kube-proxy also picks an endpoint at random. Only the node's own pods are listed,
    as with externalTrafficPolicy Local.
    """
    choices = ", ".join(f"{index} : {pod.address}" for index, pod in enumerate(node.pods))
    return (
        "table ip spike_lab {\n"
        "    chain prerouting {\n"
        "        type nat hook prerouting priority dstnat; policy accept;\n"
        f"        ip daddr {VIP} tcp dport {SERVICE_PORT} "
        f"dnat to numgen random mod {len(node.pods)} map {{ {choices} }}\n"
        "    }\n"
        "}\n"
    )


class LineWatcher:
    """Copies a process's text pipe to a log file on a thread and keeps its lines."""

    def __init__(self, stream, log_path):
        self.log_path = Path(log_path)
        self.lines = []
        self.closed = False
        self.condition = threading.Condition()
        self.thread = threading.Thread(target=self._copy, args=(stream,), daemon=True)
        self.thread.start()

    def _copy(self, stream):
        with open(self.log_path, "a", encoding="utf-8") as log:
            for line in stream:
                log.write(line)
                log.flush()
                with self.condition:
                    self.lines.append(line)
                    self.condition.notify_all()
        with self.condition:
            self.closed = True
            self.condition.notify_all()

    def wait_for(self, needle, timeout_s, process_name):
        """Return the first line containing needle.

        Raises LabError when the pipe closes or timeout_s passes without one.
        """
        deadline = time.monotonic() + timeout_s
        checked = 0
        with self.condition:
            while True:
                for line in self.lines[checked:]:
                    if needle in line:
                        return line
                checked = len(self.lines)
                if self.closed:
                    raise LabError(
                        f"{process_name} closed its output before printing {needle!r} "
                        f"(log: {self.log_path})"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LabError(
                        f"{process_name} did not print {needle!r} within {timeout_s:.0f} s "
                        f"(log: {self.log_path})"
                    )
                self.condition.wait(remaining)

    def join(self, timeout_s):
        self.thread.join(timeout_s)
