"""Scale-out live test: two Spike nodes behind a router's ECMP, routes from BGP.

tests/live/run-scaleout.sh runs this as root. In namespaces it builds a client, a
router running BIRD with multipath, two Spike nodes and three flannel nodes. Each
Spike node runs spike-dataplane, spike-controlplane (static services and BGP) and
BIRD. The test then checks, printing PASS or FAIL with the reason for each:

- the router's BGP and BFD sessions to both Spike nodes come up, and its kernel route
  to the VIP has both as next hops;
- client flows spread over both Spike nodes, and each node's control plane reports
  the same table fingerprint and its BGP metrics;
- the same 5-tuples steered through either Spike node reach the same backend node;
- after kill -9 of one Spike node's dataplane, control plane and BIRD, the router
  withdraws it, and every streamed keep-alive connection continues through the other
  node, which has no conntrack entry for it;
- a restarted Spike node is announced again;
- BFD withdraws a node whose BIRD hangs (SIGSTOP) before the BGP hold time expires;
- a node whose dataplane alone stops withdraws the VIP, and announces it again when
  the dataplane is back;
- a planned stop (SIGUSR1) withdraws the node, waits the drain time and exits, and no
  connection is lost.

The last line is `N passed, M failed`; the exit code is 1 when anything failed.
"""

import argparse
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "lab"))

import bgp  # noqa: E402 (the lab's modules are found through the path above)
import traffic  # noqa: E402
from controlplane import DATAPLANE_TIMEOUT_MS, DRAIN_S  # noqa: E402
from live_test import Checks  # noqa: E402
from scaleout import SpikeNode, start_router, stream_figures  # noqa: E402
from topology import VIP, Lab, LabError, exit_on_signals, run  # noqa: E402

SPIKE_NODES = 2
LOAD_REQUESTS = 400
STREAMED_CONNECTIONS = 120
STREAM_INTERVAL_S = 0.1
# Seconds the streams run before a Spike node goes away, and after the router has
# moved its flows.
STREAM_BEFORE_S = 2.0
STREAM_AFTER_S = 3.0
# Maximum accepted time without a response on a streamed connection: the router's
# hold time plus a margin for TCP's retransmission timer (200 ms, doubling) and a
# loaded 2-core machine.
MAX_INTERRUPTION_MS = (bgp.HOLD_TIME_S + 2) * 1000
SESSION_TIMEOUT_S = 20.0
ROUTE_TIMEOUT_S = 10.0
# Source ports steered through one Spike node at a time by a policy-routing rule.
STEERED_PORTS = list(range(40000, 40016))
STEERING_TABLE = "100"
TIME_LIMIT_S = 300


def check_sessions(checks, router_bird, spikes):
    names = sorted(spike.name for spike in spikes)
    try:
        _, waited = bgp.wait_for(
            lambda: sorted(router_bird.established()) == names, SESSION_TIMEOUT_S,
            "BGP sessions established",
        )
        checks.check(True, f"router's BGP sessions to {', '.join(names)} established "
                     f"({waited:.1f} s)")
    except LabError as error:
        checks.check(False, "router's BGP sessions established",
                     f"{error}; {router_bird.command('show', 'protocols')}")
        return False
    check_bfd(checks, router_bird, spikes)
    return check_route(checks, router_bird.lab, spikes, "BGP announces the VIP")


def check_bfd(checks, router_bird, spikes):
    """The router's BFD sessions to every Spike node come up."""
    addresses = sorted(spike.underlay_address for spike in spikes)
    try:
        _, waited = bgp.wait_for(
            lambda: bgp.bfd_sessions_up(router_bird) == addresses, SESSION_TIMEOUT_S,
            "BFD sessions up",
        )
        checks.check(True, f"router's BFD sessions to {', '.join(addresses)} are up "
                     f"({waited:.1f} s)")
    except LabError as error:
        checks.check(False, "router's BFD sessions are up",
                     f"{error}; {router_bird.command('show', 'bfd', 'sessions')}")


def check_route(checks, lab, spikes, reason):
    addresses = ", ".join(spike.underlay_address for spike in spikes)
    try:
        _, waited = bgp.wait_for(
            bgp.next_hops_are(lab, spikes), ROUTE_TIMEOUT_S, "route to the VIP"
        )
    except LabError:
        checks.check(False, f"router routes {VIP} through {addresses}",
                     f"route is {bgp.vip_route_text(lab)!r}")
        return None
    checks.check(True, f"router routes {VIP} through {addresses} after {reason} "
                 f"({waited:.2f} s)")
    return waited


def check_spread(checks, lab, nodes):
    results = traffic.run_load(lab, "spread", requests=LOAD_REQUESTS)
    failed = traffic.failures(results)
    checks.check(not failed, f"all {len(results)} requests through the ECMP route answered",
                 f"{len(failed)} failed, first: {failed[:3]}")
    for node in nodes:
        count = node.forwarded()
        checks.check(count > 0, f"{node.spike.name} forwarded {count} packets of the load",
                     "it forwarded none: ECMP did not spread the flows")


def check_metrics(checks, nodes):
    fingerprints = {}
    for node in nodes:
        text = node.controlplane.metrics()
        fingerprints[node.spike.name] = bgp.parse_fingerprints(text).get("web", "")
        for name, expected in [
            ("spike_bgp_announced_vips", 1),
            ("spike_bgp_bird_reachable", 1),
            ("spike_bgp_last_reload_success", 1),
            ("spike_bgp_dataplane_running", 1),
        ]:
            value = bgp.parse_metric(text, name)
            checks.check(value == expected, f"{node.spike.name}: {name} is {expected}",
                         f"it is {value}")
    values = set(fingerprints.values())
    checks.check(
        len(values) == 1 and "" not in values,
        f"every Spike node reports table fingerprint {sorted(values)[0]} for web",
        f"fingerprints {fingerprints}",
    )


def steered_run(lab, nodes, target, name):
    """Send STEERED_PORTS through `target` only; return results and forwarded deltas."""
    run(["ip", "-n", lab.router_ns, "route", "replace", f"{VIP}/32",
         "via", target.spike.underlay_address, "dev", "br0", "table", STEERING_TABLE])
    before = {node.spike.name: node.forwarded() for node in nodes}
    results = traffic.run_load(lab, name, source_ports=STEERED_PORTS)
    deltas = {node.spike.name: node.forwarded() - before[node.spike.name] for node in nodes}
    return results, deltas


def check_steering(checks, lab, nodes):
    """The same 5-tuples through each Spike node reach the same backend node."""
    first, last = STEERED_PORTS[0], STEERED_PORTS[-1]
    run(["ip", "-n", lab.router_ns, "rule", "add", "priority", "100", "ipproto", "tcp",
         "sport", f"{first}-{last}", "lookup", STEERING_TABLE])
    runs = []
    for node in nodes:
        results, deltas = steered_run(lab, nodes, node, f"steered-{node.spike.name}")
        others = {name: delta for name, delta in deltas.items() if name != node.spike.name}
        checks.check(
            deltas[node.spike.name] > 0 and not any(others.values()),
            f"ports {first}-{last} crossed only {node.spike.name}",
            f"forwarded packets per Spike node during the run: {deltas}",
        )
        runs.append((node.spike.name, traffic.node_by_port(results), results))
    run(["ip", "-n", lab.router_ns, "rule", "del", "priority", "100"])

    reference_name, reference, _ = runs[0]
    for name, by_port, results in runs:
        failed = traffic.failures(results)
        checks.check(not failed, f"all {len(STEERED_PORTS)} steered requests via {name} "
                     "answered", f"{len(failed)} failed: {failed[:3]}")
    for name, by_port, _ in runs[1:]:
        differ = {port: (reference.get(port), node) for port, node in by_port.items()
                  if reference.get(port) != node}
        checks.check(
            len(by_port) == len(STEERED_PORTS) and not differ,
            f"each steered 5-tuple reached the same backend node via {reference_name} "
            f"and {name}",
            f"{len(differ)} differ (port: ({reference_name}, {name})): "
            f"{dict(list(differ.items())[:5])}",
        )


def report_streams(checks, name, opened, streamed):
    """Print and check kept, lost and the longest interruption of a stream run."""
    open_failures = [result for result in opened if result["error"]]
    checks.check(not open_failures, f"{name}: {len(opened)} streamed connections opened",
                 f"{len(open_failures)} failed: {open_failures[:3]}")
    retried = sum(1 for result in opened if result.get("connect_attempts", 1) > 1)
    if retried:
        print(f"{name}: {retried} of {len(opened)} connections needed a second connect",
              flush=True)
    watched, lost, longest = stream_figures(streamed)
    kept = len(watched) - len(lost)
    print(f"{name}: connections kept {kept}, lost {len(lost)}, "
          f"longest interruption {longest} ms", flush=True)
    checks.check(kept == len(watched) and kept > 0,
                 f"{name}: all {len(watched)} streamed connections kept",
                 f"{len(lost)} lost, first: {lost[:3]}")
    checks.check(longest < MAX_INTERRUPTION_MS,
                 f"{name}: longest interruption {longest} ms < {MAX_INTERRUPTION_MS} ms",
                 "too long")


def check_failure(checks, lab, nodes):
    """kill -9 a whole Spike node under streamed connections."""
    survivor, victim = nodes[0], nodes[1]
    streams = traffic.StreamedConnections(lab, "failure", STREAMED_CONNECTIONS,
                                          STREAM_INTERVAL_S)
    opened = streams.open()
    before = victim.forwarded()
    time.sleep(STREAM_BEFORE_S)
    crossed = victim.forwarded() - before
    checks.check(crossed > 0, f"streamed connections crossed {victim.spike.name} "
                 f"({crossed} packets) before the failure", "none did")

    victim.kill()
    withdrawn = check_route(checks, lab, [survivor.spike],
                            f"kill -9 of {victim.spike.name}'s processes")
    if withdrawn is not None:
        checks.check(withdrawn < bgp.HOLD_TIME_S,
                     f"router withdrew {victim.spike.name} within the hold time "
                     f"({withdrawn:.2f} s < {bgp.HOLD_TIME_S} s)", "too slow")
    time.sleep(STREAM_AFTER_S)
    report_streams(checks, "failure", opened, streams.stop())


def check_hung_speaker(checks, lab, nodes):
    """A Spike node's BIRD stops (SIGSTOP) with its TCP session open: BFD notices."""
    survivor, hung = nodes
    hung.bird.process.send_signal(signal.SIGSTOP)
    try:
        withdrawn = check_route(checks, lab, [survivor.spike],
                                f"SIGSTOP of {hung.spike.name}'s BIRD")
    finally:
        hung.bird.process.send_signal(signal.SIGCONT)
    if withdrawn is not None:
        checks.check(withdrawn < bgp.HOLD_TIME_S,
                     f"BFD withdrew the hung {hung.spike.name} before the {bgp.HOLD_TIME_S} s "
                     f"hold time ({withdrawn:.2f} s)", "too slow")
    return check_route(checks, lab, lab.spikes, f"SIGCONT of {hung.spike.name}'s BIRD")


def check_dataplane_stop(checks, lab, nodes):
    """Only the dataplane stops: the node's control plane withdraws the VIP."""
    survivor, stopped = nodes
    code, _ = stopped.dataplane.stop()
    checks.check(code == 0, f"{stopped.spike.name}'s dataplane exits 0 on SIGTERM",
                 f"exit code {code}")
    withdrawn = check_route(checks, lab, [survivor.spike],
                            f"a stop of {stopped.spike.name}'s dataplane alone")
    limit_s = DATAPLANE_TIMEOUT_MS / 1000 + 1
    if withdrawn is not None:
        checks.check(withdrawn < limit_s,
                     f"the control plane withdrew the VIP within {limit_s:.1f} s of its "
                     f"dataplane's stop ({withdrawn:.2f} s)", "too slow")
    stopped.dataplane.start(lab.nodes)
    return check_route(checks, lab, lab.spikes, f"a restart of {stopped.spike.name}'s dataplane")


def check_drain(checks, lab, nodes):
    """The planned stop of a Spike node under streamed connections."""
    survivor, drained = nodes[0], nodes[1]
    streams = traffic.StreamedConnections(lab, "drain", STREAMED_CONNECTIONS,
                                          STREAM_INTERVAL_S)
    opened = streams.open()
    time.sleep(STREAM_BEFORE_S)
    started = time.monotonic()
    drained.controlplane.process.send_signal(signal.SIGUSR1)
    check_route(checks, lab, [survivor.spike], f"SIGUSR1 to {drained.spike.name}'s control plane")
    code = drained.controlplane.process.wait(timeout=DRAIN_S + 10)
    waited = time.monotonic() - started
    checks.check(code == 0 and waited >= DRAIN_S,
                 f"{drained.spike.name}'s control plane exited 0 after the {DRAIN_S} s "
                 f"drain ({waited:.1f} s)", f"exit code {code} after {waited:.1f} s")
    code, _ = drained.dataplane.stop()
    checks.check(code == 0, f"{drained.spike.name}'s dataplane exits 0 on SIGTERM",
                 f"exit code {code}")
    lab.stop(drained.bird.process)
    time.sleep(STREAM_AFTER_S)
    report_streams(checks, "drain", opened, streams.stop())


def run_checks(checks, lab):
    lab.create()
    lab.start_pods()
    router_bird = start_router(lab)
    nodes = [SpikeNode(lab, spike) for spike in lab.spikes]
    for node in nodes:
        node.start()
    checks.check(True, f"{len(nodes)} Spike nodes started: control plane, dataplane, BIRD")
    if not check_sessions(checks, router_bird, lab.spikes):
        return

    check_spread(checks, lab, nodes)
    check_metrics(checks, nodes)
    check_steering(checks, lab, nodes)
    check_failure(checks, lab, nodes)

    restarted = SpikeNode(lab, nodes[1].spike)
    restarted.start()
    nodes[1] = restarted
    if check_route(checks, lab, lab.spikes, f"a restart of {restarted.spike.name}") is None:
        return
    if check_hung_speaker(checks, lab, nodes) is None:
        return
    if check_dataplane_stop(checks, lab, nodes) is None:
        return
    check_drain(checks, lab, nodes)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", required=True, help="namespace name prefix, unique per run")
    parser.add_argument("--workdir", required=True, type=Path, help="configs, logs and captures")
    args = parser.parse_args()

    exit_on_signals(TIME_LIMIT_S)
    args.workdir.mkdir(parents=True, exist_ok=True)
    checks = Checks()
    lab = Lab(args.prefix, args.workdir, spike_count=SPIKE_NODES, static_vip_route=False)
    try:
        run_checks(checks, lab)
    except LabError as error:
        checks.check(False, "scale-out test ran to the end", str(error))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        lab.destroy()
        problems = lab.leftovers()
        checks.check(
            not problems, "no namespace, process or ring of the run is left",
            "; ".join(problems)
        )
        print(f"logs and configs: {args.workdir}")
        print(f"{checks.passed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
