#!/usr/bin/env bash
# Here, before a GPU call: fill carried/ (git-ignored, ~18 MB, named in the call's `carry`) with what
# the GPU machine needs and cannot fetch: the 18 MB JPEG form of CIFAR-10, a wheel of upstream's
# airbench 0.1.8 (PyPI has only its sdist), and upstream's scripts from your own checkout.
#   benchmarks/gpu_carry.sh JPEG_DIR UPSTREAM_CHECKOUT
#   e.g. benchmarks/gpu_carry.sh ../shared/data/cifar10-jpeg/jpeg ~/src/cifar10-airbench
set -euo pipefail
jpeg=${1:?JPEG_DIR holding train.npz and test.npz}; checkout=${2:?UPSTREAM_CHECKOUT}
cd "$(dirname "$0")/.."
rm -rf carried && mkdir -p carried/jpeg carried/upstream
cp "$jpeg/train.npz" "$jpeg/test.npz" carried/jpeg/
cp "$checkout/airbench94_muon.py" "$checkout/airbench96_faster.py" carried/upstream/
pip wheel -q --no-deps airbench==0.1.8 -w carried/
du -sh carried
