# The ThinkSound worker image: the pipeline installed by scripts/setup.sh, run as a non-root user.
#
#   BASE   production: a CUDA runtime with Python 3.11 available from apt (Ubuntu 22.04 or Debian 12);
#          the tests: thinksound-base:bookworm, built from Debian packages by scripts/container.sh.
#
# No weights inside: mount a hub cache at /weights (see `thinksound weights fetch --to DIR`) or fetch
# them when the container starts. No secrets inside: S3 and Prefect credentials come from the
# environment at run time. Entry points: `thinksound ...`, `prefect-worker`, `ray-worker`
# (deploy/entrypoint.sh).
ARG BASE=docker.io/nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04
FROM ${BASE}

# Build-time only: where pip finds packages (local wheel folders that the build mounts, a constraints
# file, a wheelhouse that scripts/setup.sh installs from and fills) and keeps its cache (a mounted
# folder, kept out of the image). Empty in a plain `docker build`, which installs from PyPI.
ARG PIP_FIND_LINKS
ARG PIP_EXTRA_INDEX_URL
ARG PIP_CONSTRAINT
ARG PIP_CERT
ARG PIP_CACHE_DIR=/root/.cache/pip
ARG WHEELHOUSE=""

WORKDIR /opt/thinksound

# The dependencies first, from pyproject.toml and setup.sh alone: a builder with a layer cache
# (`docker build`, `buildah bud --layers`) reuses this layer, the bulk of the image, until one of those
# two files changes; a change to the code rebuilds only the small layer below. Each step cleans up
# after itself, so that apt lists and build leftovers never land in a layer.
COPY pyproject.toml /opt/thinksound/
COPY scripts/setup.sh /opt/thinksound/scripts/
RUN set -eu; \
    if ! python3.11 -c "import ensurepip, ssl" 2>/dev/null; then \
        apt-get update -qq; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            python3.11 python3.11-venv ca-certificates; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    PYTHON=python3.11 THINKSOUND_WHEELHOUSE="${WHEELHOUSE}" bash scripts/setup.sh --deps-only; \
    rm -rf /root/.cache /tmp/*

COPY . /opt/thinksound
RUN set -eu; \
    PYTHON=python3.11 THINKSOUND_WHEELHOUSE="${WHEELHOUSE}" bash scripts/setup.sh --no-dev; \
    rm -rf /root/.cache /tmp/*; \
    echo "thinksound:x:10001:10001:ThinkSound worker:/home/thinksound:/bin/bash" >> /etc/passwd; \
    echo "thinksound:x:10001:" >> /etc/group; \
    mkdir -p /home/thinksound /work /weights; \
    chown 10001:10001 /home/thinksound /work /weights

ENV PATH=/opt/thinksound/.venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/home/thinksound \
    HF_HUB_CACHE=/weights \
    THINKSOUND_REPO=/opt/thinksound \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DO_NOT_TRACK=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    PYTHONUNBUFFERED=1

USER 10001:10001
WORKDIR /work
ENTRYPOINT ["/opt/thinksound/deploy/entrypoint.sh"]
CMD ["thinksound", "--help"]
