#!/usr/bin/env bash
# Create .venv at the repository root and install the project with pinned dependencies.
#   bash scripts/setup.sh            the pipeline and its development tools
#   bash scripts/setup.sh --no-dev   the pipeline only (what the worker image installs)
#   bash scripts/setup.sh --test     also test tools: the vLLM CPU environment (.venv-vllm), Chromium,
#                                    PostgreSQL (the server the shared DuckLake lineage tests start),
#                                    and buildah + debootstrap for the container test
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python_bin="${PYTHON:-python3.11}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 PIP_DISABLE_PIP_VERSION_CHECK=1

filter_pip_noise() { grep -v "is ignored: it is neither a file nor a directory" || true; }

if [ ! -x .venv/bin/python ]; then
    "$python_bin" -m venv .venv
fi
project='.[dev]'
if [ "${1:-}" = "--no-dev" ]; then
    project='.'
fi
.venv/bin/python -m pip install -q -e "$project" 2>&1 | filter_pip_noise

if [ "${1:-}" = "--test" ]; then
    if ! command -v chromium >/dev/null 2>&1; then
        if command -v apt-get >/dev/null 2>&1; then
            (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
                || echo "warning: chromium could not be installed; browser tests will be skipped"
        fi
    fi
    if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
        if command -v apt-get >/dev/null 2>&1; then
            (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) \
                || echo "warning: postgresql could not be installed; DuckLake lineage tests will be skipped"
        fi
    fi
    if ! command -v buildah >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
        if command -v apt-get >/dev/null 2>&1; then
            (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah debootstrap) \
                || echo "warning: buildah/debootstrap could not be installed; the container test will be skipped"
        fi
    fi
    bash .ci/vllm_env.sh
fi
