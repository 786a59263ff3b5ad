"""Bounded tshark captures inside the lab's namespaces and their decoding."""

import subprocess

from topology import VXLAN_PORT, LabError, LineWatcher

# Seconds tshark may take to open the interface.
CAPTURE_START_TIMEOUT_S = 15.0


class Capture:
    """A tshark capture on one interface, bounded by packet count and duration."""

    def __init__(self, lab, namespace, interface, pcap_path, max_packets, max_seconds,
                 capture_filter=""):
        self.lab = lab
        self.pcap_path = pcap_path
        argv = [
            "tshark", "-n", "-q", "-i", interface, "-w", str(pcap_path),
            "-c", str(max_packets), "-a", f"duration:{max_seconds}",
        ]
        if capture_filter:
            argv += ["-f", capture_filter]
        # Its own session lets `stop` signal tshark and the dumpcap it starts together.
        self.process = lab.spawn(
            namespace, argv, new_session=True, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
        )
        log_path = pcap_path.with_suffix(".log")
        self.stderr = LineWatcher(self.process.stderr, log_path)
        self.stderr.wait_for("Capturing on", CAPTURE_START_TIMEOUT_S, f"tshark on {interface}")

    def stop(self):
        """End the capture if its bounds have not ended it yet; return the pcap path."""
        self.lab.stop(self.process)
        self.stderr.join(5.0)
        return self.pcap_path


def read_fields(pcap_path, fields, display_filter=""):
    """Decode a capture with VXLAN on flannel's port; one list of field values per frame.

    A field that occurs more than once in a frame (the outer and the inner Ethernet
    header, say) comes back as its values joined by commas, outer first.
    """
    argv = [
        "tshark", "-n", "-r", str(pcap_path), "-d", f"udp.port=={VXLAN_PORT},vxlan",
        "-o", "udp.check_checksum:TRUE", "-T", "fields", "-E", "separator=/t",
        "-E", "occurrence=a", "-E", "aggregator=,",
    ]
    for name in fields:
        argv += ["-e", name]
    if display_filter:
        argv += ["-Y", display_filter]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LabError(f"tshark could not read {pcap_path}: {result.stderr.strip()}")
    return [line.split("\t") for line in result.stdout.splitlines()]


def count_frames(pcap_path, display_filter):
    return len(read_fields(pcap_path, ["frame.number"], display_filter))
