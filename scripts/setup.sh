#!/usr/bin/env bash
# Create .venv at the repository root and install the project with pinned dependencies.
#   bash scripts/setup.sh            the pipeline and its development tools
#   bash scripts/setup.sh --no-dev   the pipeline only (what the worker image installs)
#   bash scripts/setup.sh --deps-only   only the pipeline's dependencies, read from pyproject.toml (the
#                                    worker image's first layer, which a layer cache keeps across code changes)
#   bash scripts/setup.sh --test     also test tools: the vLLM CPU environment (.venv-vllm), Chromium,
#                                    PostgreSQL (the server the shared DuckLake lineage tests start),
#                                    and buildah + debootstrap for the container test
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python_bin="${PYTHON:-python3.11}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# Wheels are kept in a wheelhouse on the machine: the next fresh clone (CI clones afresh for each run)
# and the worker image's build (scripts/container.sh mounts it) install from it without the network.
# pip's own cache cannot stand in: the package index's answers here are not cacheable. An empty
# THINKSOUND_WHEELHOUSE means none (a plain `docker build`).
wheelhouse="${THINKSOUND_WHEELHOUSE-${THINKSOUND_BUILD_CACHE:-/var/cache/thinksound-build}/wheels}"

filter_pip_noise() { grep -v "is ignored: it is neither a file nor a directory" || true; }

pip_install() {
    # pip_install ARGS...: pip install's arguments (`-e .`, `-r FILE`); a download fetches the same, not editable.
    if [ -z "$wheelhouse" ] || ! mkdir -p "$wheelhouse" 2>/dev/null; then
        .venv/bin/python -m pip install -q "$@" 2>&1 | filter_pip_noise
        return
    fi
    if .venv/bin/python -m pip install -q --no-index --find-links "$wheelhouse" "$@" >/dev/null 2>&1; then
        return
    fi
    local -a fetch=("$@")
    [ "$1" = "-e" ] && fetch=("${@:2}")
    # What the wheelhouse lacks (a first install, or changed pins), and the project's build backend.
    .venv/bin/python -m pip download -q -d "$wheelhouse" "setuptools>=68" "${fetch[@]}" 2>&1 | filter_pip_noise
    .venv/bin/python -m pip install -q --no-index --find-links "$wheelhouse" "$@" 2>&1 | filter_pip_noise
}

if [ ! -x .venv/bin/python ]; then
    "$python_bin" -m venv .venv
fi
if [ "${1:-}" = "--deps-only" ]; then
    requirements="$(mktemp)"
    .venv/bin/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        >"$requirements"
    pip_install -r "$requirements"
    rm -f "$requirements"
    exit 0
fi
project='.[dev]'
if [ "${1:-}" = "--no-dev" ]; then
    project='.'
fi
pip_install -e "$project"

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
