#!/usr/bin/env python3
"""Write a pcap of client-to-VIP TCP traffic for the packet-rate benchmark.

The capture holds one SYN per flow, in flow order, followed by rounds of one ACK per
flow, so every flow starts with a SYN and a replay that loops (net_pcap's
infinite_rx) keeps hitting tracked flows. Flow i comes from client address
10.0.0.0 + i (IPv4) or 2001:db8:c::i (IPv6) and source port 1024 + i % 60000, so every
index below 2^24 is a distinct five-tuple. Small flow counts get extra ACK rounds
until the capture holds at least --min-packets frames.

Frame sizes are sizes on the wire, FCS included, as DPDK and RFC 2544 count them: a
64-byte frame is 60 bytes in the capture. The smallest IPv6 TCP frame is 74 bytes in
the capture (78 on the wire), so IPv6 frames are never shorter than that. The ACKs
carry zero payload bytes up to the frame size, the SYNs none (padded like a NIC pads a
short frame). IPv4 header and TCP checksums are valid.

Only the Python 3 standard library is used.
"""

import argparse
import struct
import sys

VIP4 = bytes([3, 235, 60, 34])
VIP6 = bytes.fromhex("20010db8000500000000000000000034")
VIP_PORT = 8080
CLIENT6_PREFIX = bytes.fromhex("20010db8000c0000")
SRC_MAC = bytes.fromhex("020000000aaa")
DST_MAC = bytes.fromhex("025350000001")
FCS_LEN = 4
ETHERNET_LEN = 14
IPV4_LEN = 20
IPV6_LEN = 40
TCP_LEN = 20
TCP_SYN = 0x02
TCP_ACK = 0x10
PCAP_GLOBAL_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)


def fold(total):
    """Fold a ones' complement sum to 16 bits."""
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def word_sum(data):
    """Sum big-endian 16-bit words, the last byte padded with zero."""
    if len(data) % 2:
        data += b"\0"
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


class Builder:
    """Frames of one address family and size, built from constant parts per flag set."""

    def __init__(self, family, size):
        self.family = family
        ip_len = IPV4_LEN if family == 4 else IPV6_LEN
        headers = ETHERNET_LEN + ip_len + TCP_LEN
        self.capture_len = max(size - FCS_LEN, headers)
        self.payload = bytes(self.capture_len - headers)
        self.payload_sum = word_sum(self.payload)

    def frame(self, flow, flags):
        payload = self.payload if flags == TCP_ACK else b""
        src_port = 1024 + flow % 60000
        seq = 1 if flags == TCP_ACK else 0
        ack = 1 if flags == TCP_ACK else 0
        tcp_len = TCP_LEN + len(payload)
        if self.family == 4:
            src = struct.pack("!I", 0x0A000000 + flow)
            dst = VIP4
            pseudo = word_sum(src + dst) + 6 + tcp_len
        else:
            src = CLIENT6_PREFIX + struct.pack("!Q", flow)
            dst = VIP6
            pseudo = word_sum(src + dst) + 6 + tcp_len
        tcp = struct.pack("!HHIIBBHHH", src_port, VIP_PORT, seq, ack, 5 << 4, flags, 65535, 0, 0)
        total = pseudo + word_sum(tcp) + (self.payload_sum if payload else 0)
        checksum = (~fold(total)) & 0xFFFF
        tcp = tcp[:16] + struct.pack("!H", checksum) + tcp[18:]

        if self.family == 4:
            ip = bytearray(
                struct.pack("!BBHHHBBH4s4s", 0x45, 0, IPV4_LEN + tcp_len, 0, 0x4000, 64, 6, 0,
                            src, dst)
            )
            ip[10:12] = struct.pack("!H", (~fold(word_sum(bytes(ip)))) & 0xFFFF)
            ethertype = 0x0800
        else:
            ip = struct.pack("!IHBB16s16s", 6 << 28, tcp_len, 6, 64, src, dst)
            ethertype = 0x86DD
        frame = DST_MAC + SRC_MAC + struct.pack("!H", ethertype) + bytes(ip) + tcp + payload
        return frame + bytes(self.capture_len - len(frame)) if len(frame) < 60 else frame


def write_capture(path, flows, family, size, min_packets):
    builder = Builder(family, size)
    ack_rounds = max(1, -(-min_packets // flows) - 1)
    record_header = struct.Struct("<IIII")
    written = 0
    with open(path, "wb") as out:
        out.write(PCAP_GLOBAL_HEADER)
        for round_index in range(1 + ack_rounds):
            flags = TCP_SYN if round_index == 0 else TCP_ACK
            # Every ACK round repeats the same frames: build them once for small counts.
            frames = (builder.frame(flow, flags) for flow in range(flows))
            for frame in frames:
                out.write(record_header.pack(written // 1_000_000, written % 1_000_000,
                                             len(frame), len(frame)))
                out.write(frame)
                written += 1
    return written


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, required=True, help="distinct flows, 1 to 2^24")
    parser.add_argument("--size", type=int, default=64,
                        help="frame size on the wire in bytes, FCS included (default 64)")
    parser.add_argument("--family", type=int, choices=(4, 6), default=4,
                        help="IP version of the client traffic (default 4)")
    parser.add_argument("--min-packets", type=int, default=4096,
                        help="minimum frames in the capture (default 4096)")
    parser.add_argument("--output", required=True, help="pcap file to write")
    args = parser.parse_args()
    if not 1 <= args.flows <= 1 << 24:
        parser.error(f"--flows {args.flows} is out of range: use 1 to 16777216")
    if not 64 <= args.size <= 1518:
        parser.error(f"--size {args.size} is out of range: use 64 to 1518")
    count = write_capture(args.output, args.flows, args.family, args.size, args.min_packets)
    print(f"{args.output}: {count} frames, {args.flows} flows", file=sys.stderr)


if __name__ == "__main__":
    main()
