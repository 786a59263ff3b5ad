#!/usr/bin/env bash
# Runs the `decision` cargo-fuzz target of spike-core for a bounded time.
#
# The corpus is seeded with every frame of every capture in ../shared/pcaps (relative to
# the repository root), one file per frame. The script exits non-zero when libFuzzer
# reports a crash, a leak or a timeout; the failing input is left under
# dataplane/core/fuzz/artifacts/decision/.
#
# Toolchain: on stable Rust the target runs with `--sanitizer none`. libFuzzer's coverage
# instrumentation needs only stable codegen flags, and every panic is still a crash.
# cargo-fuzz's default AddressSanitizer needs `-Zsanitizer=address`, which stable rustc
# rejects, and RUSTC_BOOTSTRAP=1 does not get it through (checked with cargo-fuzz 0.13.2
# and rustc 1.95). FUZZ_SANITIZER=address runs on the nightly toolchain instead.
#
# Environment:
#   FUZZ_SECONDS    total fuzzing time in seconds (default 60)
#   FUZZ_SANITIZER  none (default) or address, which needs a nightly toolchain
#   PCAP_DIR        captures to seed the corpus from (default ../shared/pcaps)

set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fuzz_dir="$repo_root/dataplane/core/fuzz"
target="decision"
seconds="${FUZZ_SECONDS:-60}"
pcap_dir="${PCAP_DIR:-$repo_root/../shared/pcaps}"
corpus="$fuzz_dir/corpus/$target"

if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "fuzz.sh: invalid FUZZ_SECONDS=$seconds: expected a whole number of seconds above 0" >&2
    exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz not found, installing it from crates.io"
    cargo install --locked cargo-fuzz
fi

sanitizer="${FUZZ_SANITIZER:-none}"
case "$sanitizer" in
    none) toolchain=() ;;
    address) toolchain=(+nightly) ;;
    *)
        echo "fuzz.sh: invalid FUZZ_SANITIZER=$sanitizer: expected none or address" >&2
        exit 2
        ;;
esac

# One file per captured frame, named after the capture and the frame's position in it.
# Classic pcap only (both byte orders, microsecond or nanosecond timestamps).
mkdir -p "$corpus"
if [ -d "$pcap_dir" ]; then
    python3 - "$pcap_dir" "$corpus" <<'PYTHON'
import pathlib
import struct
import sys

pcap_dir, corpus = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
MAGICS = {
    b"\xd4\xc3\xb2\xa1": "<",
    b"\x4d\x3c\xb2\xa1": "<",
    b"\xa1\xb2\xc3\xd4": ">",
    b"\xa1\xb2\x3c\x4d": ">",
}
LINKTYPE_ETHERNET = 1
total = 0
for capture in sorted(pcap_dir.glob("*.pcap")):
    data = capture.read_bytes()
    order = MAGICS.get(data[:4])
    if order is None:
        print(f"fuzz.sh: skipping {capture.name}: not a classic pcap file", file=sys.stderr)
        continue
    linktype = struct.unpack(order + "I", data[20:24])[0]
    if linktype != LINKTYPE_ETHERNET:
        print(f"fuzz.sh: skipping {capture.name}: link type {linktype}, expected Ethernet (1)",
              file=sys.stderr)
        continue
    offset, index = 24, 0
    while offset + 16 <= len(data):
        captured_len = struct.unpack(order + "I", data[offset + 8:offset + 12])[0]
        frame = data[offset + 16:offset + 16 + captured_len]
        offset += 16 + captured_len
        (corpus / f"{capture.stem}-{index:04d}").write_bytes(frame)
        index += 1
    total += index
print(f"fuzz.sh: seeded {total} frames from {pcap_dir}")
PYTHON
else
    echo "fuzz.sh: $pcap_dir not found, fuzzing without seed frames" >&2
fi

# Fragments redirected by another Spike node: VXLAN from 192.0.2.2 to the target's
# node (192.0.2.1, port 8472) with its cluster's redirect VNI 4097, around a first and a
# later TCP fragment to the example config's web service. No capture contains such frames.
python3 - "$corpus" <<'PYTHON'
import pathlib
import struct
import sys

corpus = pathlib.Path(sys.argv[1])


def ipv4(src, dst, protocol, payload, flags_offset):
    total = 20 + len(payload)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0x1234, flags_offset, 64,
                         protocol, 0, bytes(src), bytes(dst))
    return header + payload


def ethernet(dst, src, payload):
    return bytes(dst) + bytes(src) + b"\x08\x00" + payload


node = [0x02, 0x53, 0x50, 0, 0, 0x01]
peer = [0x02, 0x53, 0x50, 0, 0x01, 0x02]
tcp = struct.pack("!HHIIBBHHH", 40000, 8080, 1, 0, 0x50, 0x02, 64240, 0, 0) + b"x" * 24
fragments = {
    "first": ipv4([198, 51, 100, 7], [3, 235, 60, 34], 6, tcp[:24], 0x2000),
    "later": ipv4([198, 51, 100, 7], [3, 235, 60, 34], 6, tcp[24:], 3),
}
for name, fragment in fragments.items():
    inner = ethernet(peer, [0x02, 0x53, 0x50, 0, 0, 0x02], fragment)
    vxlan = struct.pack("!II", 0x08000000, 4097 << 8) + inner
    udp = struct.pack("!HHHH", 50000, 8472, 8 + len(vxlan), 0) + vxlan
    outer = ethernet(node, peer, ipv4([192, 0, 2, 2], [192, 0, 2, 1], 17, udp, 0))
    (corpus / f"redirect-{name}").write_bytes(outer)
PYTHON

cd "$fuzz_dir"
echo "fuzz.sh: running $target for ${seconds}s with sanitizer $sanitizer"
status=0
cargo "${toolchain[@]}" fuzz run --sanitizer "$sanitizer" "$target" "$corpus" -- \
    -max_total_time="$seconds" -max_len=4096 -timeout=10 ||
    status=$?

if [ "$status" -ne 0 ]; then
    echo "fuzz.sh: $target failed with exit code $status; inputs are in $fuzz_dir/artifacts/$target" >&2
    exit "$status"
fi
echo "fuzz.sh: $target ran ${seconds}s without a crash"
