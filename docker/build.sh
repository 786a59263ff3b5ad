#!/usr/bin/env bash
# Builds Spike's binaries into out/bin and the spike-controlplane and spike-keyserver
# images with docker/Dockerfile. Both get the last commit's time as SOURCE_DATE_EPOCH,
# so builds of one commit carry the same timestamps. Needs Docker with BuildKit.
set -euo pipefail
cd "$(dirname "$0")/.."

SOURCE_DATE_EPOCH="$(git log -1 --format=%ct)"
export SOURCE_DATE_EPOCH
tag="$(git describe --always --dirty)"

docker build -f docker/Dockerfile --build-arg SOURCE_DATE_EPOCH --target binaries \
    --output type=local,dest=out/bin .
for target in controlplane keyserver; do
    docker build -f docker/Dockerfile --build-arg SOURCE_DATE_EPOCH --target "$target" \
        -t "spike-$target:$tag" .
done
