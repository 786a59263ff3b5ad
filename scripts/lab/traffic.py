"""Client traffic in the lab's client namespace, and what it shows about balancing."""

import collections
import json
import subprocess
import sys

from topology import ROLES_SCRIPT, SERVICE_PORT, VIP, LabError, LineWatcher

# Seconds the whole load run may take; no request starts after it.
LOAD_DEADLINE_S = 120.0
# Seconds a held-connection step may take.
HOLD_STEP_TIMEOUT_S = 60.0


def run_load(lab, name, requests=1000, source_ports=None, workers=8, timeout_s=5.0):
    """Make `requests` GET requests to the VIP, one TCP connection each.

    With source_ports, request i binds to source_ports[i] so that the same 5-tuples
    as an earlier run reach Spike. Returns the per-request results in order.
    """
    argv = [
        sys.executable, str(ROLES_SCRIPT), "load", "--vip", VIP,
        "--port", str(SERVICE_PORT), "--requests", str(requests),
        "--workers", str(workers), "--timeout-s", str(timeout_s),
        "--deadline-s", str(LOAD_DEADLINE_S),
    ]
    if source_ports is not None:
        ports_path = lab.workdir / f"{name}-source-ports.json"
        ports_path.write_text(json.dumps(source_ports), encoding="utf-8")
        argv += ["--source-ports", str(ports_path)]
    process = lab.spawn(
        lab.client_ns, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        stdout, stderr = process.communicate(timeout=LOAD_DEADLINE_S + 30)
    except subprocess.TimeoutExpired:
        lab.stop(process)
        raise LabError(f"load run {name} did not finish in {LOAD_DEADLINE_S + 30:.0f} s") from None
    if process.returncode != 0:
        raise LabError(f"load run {name} failed with exit code {process.returncode}: {stderr}")
    (lab.workdir / f"{name}-results.json").write_text(stdout, encoding="utf-8")
    output = json.loads(stdout)
    if output["skipped_after_deadline"]:
        raise LabError(
            f"load run {name} hit its {LOAD_DEADLINE_S:.0f} s deadline: "
            f"{output['skipped_after_deadline']} requests not started"
        )
    return output["results"]


def failures(results):
    return [result for result in results if result["error"]]


def count_by_node(results):
    return collections.Counter(result["node"] for result in results if not result["error"])


def count_by_pod(results):
    return collections.Counter(
        (result["node"], result["pod"]) for result in results if not result["error"]
    )


def replay_ports(results):
    """Source ports of the successful requests, each port once, in order."""
    ports = {}
    for result in results:
        if not result["error"]:
            ports.setdefault(result["source_port"], None)
    return list(ports)


def node_by_port(results):
    """The node that served each source port's first successful request."""
    nodes = {}
    for result in results:
        if not result["error"]:
            nodes.setdefault(result["source_port"], result["node"])
    return nodes


def compare_replay(before, after):
    """Compare the node of each flow in the first run with the node of its replay.

    Returns, per node of the first run, a Counter with `stayed`, `moved` (served by
    another node) and `failed` (the replay got no response, or could not bind its
    source port).
    """
    first_nodes = node_by_port(before)
    outcome = collections.defaultdict(collections.Counter)
    for replay in after:
        first_node = first_nodes.get(replay["source_port"])
        if first_node is None:
            continue
        if replay["error"]:
            outcome[first_node]["failed"] += 1
        elif replay["node"] == first_node:
            outcome[first_node]["stayed"] += 1
        else:
            outcome[first_node]["moved"] += 1
    return outcome


def moved_to(before, after, node):
    """Count, per node, the replays of the flows that `node` served in the first run."""
    first_nodes = node_by_port(before)
    return collections.Counter(
        replay["node"]
        for replay in after
        if first_nodes.get(replay["source_port"]) == node and not replay["error"]
    )


class HeldConnections:
    """Keep-alive connections that stay open across a change of Spike's backends.

    `open` makes one request on each and keeps them open. `request_again` makes a
    second request on each one that is still open, then closes them all.
    """

    def __init__(self, lab, count=30, first_port=61000):
        self.lab = lab
        argv = [
            sys.executable, str(ROLES_SCRIPT), "hold", "--vip", VIP,
            "--port", str(SERVICE_PORT), "--count", str(count),
            "--first-port", str(first_port), "--wait-s", str(HOLD_STEP_TIMEOUT_S * 2),
        ]
        self.process = lab.spawn(
            lab.client_ns, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )
        self.output = LineWatcher(self.process.stdout, lab.workdir / "held-connections.log")

    def event(self, name):
        line = self.output.wait_for(f'"event": "{name}"', HOLD_STEP_TIMEOUT_S, "held connections")
        return json.loads(line)["results"]

    def open(self):
        return self.event("opened")

    def request_again(self):
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        results = self.event("after")
        self.process.stdin.close()
        self.process.wait(timeout=HOLD_STEP_TIMEOUT_S)
        return results


class StreamedConnections:
    """Keep-alive connections that each make a request every interval_s.

    `open` waits until every connection has made its first request. `stop` ends the
    streaming and returns, per connection, its node and pod, the number of responses,
    the longest time between two responses (`longest_gap_ms`) and any error.
    """

    def __init__(self, lab, name, count, interval_s=0.1, timeout_s=10.0):
        argv = [
            sys.executable, str(ROLES_SCRIPT), "stream", "--vip", VIP,
            "--port", str(SERVICE_PORT), "--count", str(count),
            "--interval-s", str(interval_s), "--timeout-s", str(timeout_s),
            "--max-duration-s", str(HOLD_STEP_TIMEOUT_S * 2),
        ]
        self.process = lab.spawn(
            lab.client_ns, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )
        self.output = LineWatcher(self.process.stdout, lab.workdir / f"{name}-stream.log")

    def event(self, name):
        line = self.output.wait_for(f'"event": "{name}"', HOLD_STEP_TIMEOUT_S, "streamed connections")
        return json.loads(line)["results"]

    def open(self):
        return self.event("opened")

    def stop(self):
        self.process.stdin.write("stop\n")
        self.process.stdin.flush()
        results = self.event("streamed")
        self.process.stdin.close()
        self.process.wait(timeout=HOLD_STEP_TIMEOUT_S)
        return results
