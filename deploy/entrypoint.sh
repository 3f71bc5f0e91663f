#!/usr/bin/env bash
# Entry points of the worker image.
#   thinksound ARGS...         the pipeline's command line (run, reprocess, status, weights fetch, ...)
#   prefect-worker [ARGS...]   a Prefect worker polling $PREFECT_WORK_POOL on $PREFECT_API_URL
#   ray-worker [ARGS...]       a Ray worker joining the cluster at $RAY_ADDRESS (host:port)
#   anything else              run as given
set -euo pipefail

case "${1:-}" in
    prefect-worker)
        shift
        : "${PREFECT_API_URL:?set PREFECT_API_URL to the Prefect server, e.g. http://prefect:4200/api}"
        exec prefect worker start --pool "${PREFECT_WORK_POOL:-thinksound}" "$@"
        ;;
    ray-worker)
        shift
        : "${RAY_ADDRESS:?set RAY_ADDRESS to the Ray head, e.g. ray-head:6379}"
        exec ray start --address "${RAY_ADDRESS}" --block "$@"
        ;;
    *)
        exec "$@"
        ;;
esac
