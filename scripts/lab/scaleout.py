"""Several Spike nodes behind the router's ECMP, for the scale-out test and the demo.

A `SpikeNode` is what runs on one Spike node: spike-controlplane (static services,
snapshot ring, BGP), spike-dataplane on that ring and BIRD with
configs/bird-spike.conf. The router's BIRD (`start_router`) takes the VIP's route
from them and installs it with one next hop per announcing node.
"""

import signal

import bgp
from controlplane import Controlplane
from dataplane import Dataplane


class SpikeNode:
    """The processes of one Spike node: control plane, dataplane and BIRD."""

    def __init__(self, lab, spike, bfd=True):
        self.lab = lab
        self.spike = spike
        self.controlplane = Controlplane(lab, spike, bfd=bfd)
        self.dataplane = Dataplane(lab, spike, snapshot_ring=self.controlplane.ring)
        self.bird = bgp.Bird(lab, spike.namespace, spike.name)

    def start(self):
        """Start the control plane, the dataplane, then BIRD.

        BIRD reads the routes file that the control plane writes, and by the time it
        starts the dataplane runs, so the file already lists the VIP.
        """
        self.controlplane.start(self.lab.nodes)
        self.dataplane.start(self.lab.nodes)
        routes = self.controlplane.routes_file.resolve()
        log = (self.lab.workdir / f"{self.spike.name}-bird.log").resolve()
        self.bird.start(bgp.spike_config(routes, log))

    def processes(self):
        return [self.bird.process, self.controlplane.process, self.dataplane.process]

    def kill(self):
        """Send SIGKILL to every process of the node at once, as when the node dies."""
        for process in self.processes():
            process.send_signal(signal.SIGKILL)
        for process in self.processes():
            process.wait(timeout=10)

    def forwarded(self):
        """Return the dataplane's forwarded packets, read after a fresh counters write."""
        return self.dataplane.fresh_counters().get("forwarded", 0)


def start_router(lab, bfd=True):
    """Start BIRD in the router namespace with a session to each of lab's Spike nodes."""
    router = bgp.Bird(lab, lab.router_ns, "router")
    router.start(bgp.router_config(lab, bfd=bfd))
    return router


def stream_figures(streamed, removed_backend=None):
    """Summarise streamed connections: (watched, lost, longest interruption in ms).

    Connections that failed to open, and those on `removed_backend`, are not watched.
    """
    watched = [result for result in streamed if not result["error"].startswith("open")]
    if removed_backend:
        watched = [result for result in watched if result["node"] != removed_backend]
    lost = [result for result in watched if result["error"]]
    longest_ms = max((result["longest_gap_ms"] for result in watched), default=0)
    return watched, lost, longest_ms
