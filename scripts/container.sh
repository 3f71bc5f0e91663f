#!/usr/bin/env bash
# Build and smoke-test the worker image with buildah: no daemon, no registry. Run as root.
#   bash scripts/container.sh build   the base image from Debian packages if missing, then thinksound-worker:latest
#   bash scripts/container.sh smoke   a tiny-preset run inside the image on generated videos; lineage checked outside
# Needs buildah and debootstrap (apt-get install buildah debootstrap; scripts/setup.sh --test installs them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

image="${THINKSOUND_IMAGE:-thinksound-worker:latest}"
base_image="${THINKSOUND_BASE_IMAGE:-thinksound-base:bookworm}"
cache_dir="${THINKSOUND_BUILD_CACHE:-/var/cache/thinksound-build}"
# The wheels scripts/setup.sh keeps on this machine: the image installs from them (and adds what they lack).
wheelhouse="${THINKSOUND_WHEELHOUSE-$cache_dir/wheels}"
worker_uid=10001
# overlay where the kernel has it (no copy of the image per container), else vfs (copies, but runs anywhere).
if [ -z "${THINKSOUND_STORAGE_DRIVER:-}" ] && grep -qw overlay /proc/filesystems; then
    storage_driver=overlay
else
    storage_driver="${THINKSOUND_STORAGE_DRIVER:-vfs}"
fi

bah() { buildah --storage-driver "$storage_driver" "$@"; }
say() { echo "container.sh [$(date -u +%T)]: $*" >&2; }

debian_mirror() {
    # The mirror apt already uses: deb822 .sources first, then the one-line format.
    local url
    url="$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1 || true)"
    if [ -z "$url" ]; then
        url="$(awk '$1 == "deb" && $3 ~ /^bookworm$/ {print $2; exit}' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)"
    fi
    echo "${url:-http://deb.debian.org/debian}"
}

build_base() {
    if bah inspect --type image "$base_image" >/dev/null 2>&1; then
        say "base $base_image present"
        return
    fi
    local rootfs ctr mirror
    mirror="$(debian_mirror)"
    rootfs="$(mktemp -d /var/tmp/thinksound-rootfs.XXXXXX)"
    say "debootstrap bookworm from $mirror"
    # apt's own package cache doubles as debootstrap's: packages the host already fetched are not fetched again.
    debootstrap --variant=minbase --cache-dir=/var/cache/apt/archives \
        --include=python3.11,python3.11-venv,python3-distutils,python3-lib2to3,ca-certificates \
        bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -n 20 "$rootfs.log" >&2; exit 1; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs.log"
    ctr="$(bah from scratch)"
    bah copy "$ctr" "$rootfs" / >/dev/null
    bah config --cmd /bin/bash "$ctr"
    bah commit --rm --quiet "$ctr" "$base_image" >/dev/null
    rm -rf "$rootfs"
    say "base $base_image committed"
}

host_pip_setting() {
    # The host pip's value of a setting ($PIP_* first, then its config files), so that the build
    # installs from the same local wheel folders and constraints.
    local key="$1" env="$2"
    if [ -n "${!env:-}" ]; then
        echo "${!env}"
        return
    fi
    python3 -m pip config list 2>/dev/null | sed -n "s/^[^=]*\.${key}='\(.*\)'\$/\1/p" | tail -n1 || true
}

build_image() {
    local find_links extra_index constraint cert path
    local -a mounts=(--volume "$cache_dir/pip:/var/cache/pip-build")
    mkdir -p "$cache_dir/pip"
    find_links="$(host_pip_setting find-links PIP_FIND_LINKS)"
    extra_index="$(host_pip_setting extra-index-url PIP_EXTRA_INDEX_URL)"
    constraint="$(host_pip_setting constraint PIP_CONSTRAINT)"
    for path in $find_links $extra_index $constraint; do
        path="${path#file://}"
        path="${path%/}"
        # A local index's pages link to files beside its simple/ folder: mount the folder above.
        [ "$(basename "$path")" = simple ] && path="$(dirname "$path")"
        if [ -e "$path" ]; then
            mounts+=(--volume "$path:$path:ro")
        fi
    done
    # The host's CA bundle, for package indexes behind a TLS-inspecting proxy.
    cert="$(host_pip_setting cert PIP_CERT)"
    if [ -f "$cert" ]; then
        mounts+=(--volume "$cert:/run/host-ca.crt:ro")
        cert=/run/host-ca.crt
    else
        cert=""
    fi
    local -a args=(--build-arg BASE="$base_image" --build-arg PIP_CACHE_DIR=/var/cache/pip-build)
    if [ -n "$wheelhouse" ]; then
        mkdir -p "$wheelhouse"
        mounts+=(--volume "$wheelhouse:/var/cache/thinksound-wheels")
        args+=(--build-arg WHEELHOUSE=/var/cache/thinksound-wheels)
    fi
    [ -n "$find_links" ] && args+=(--build-arg PIP_FIND_LINKS="$find_links")
    [ -n "$extra_index" ] && args+=(--build-arg PIP_EXTRA_INDEX_URL="$extra_index")
    [ -n "$constraint" ] && args+=(--build-arg PIP_CONSTRAINT="$constraint")
    [ -n "$cert" ] && args+=(--build-arg PIP_CERT="$cert")
    say "building $image on $base_image ($storage_driver storage)"
    # --layers: the dependency layer (see Dockerfile) is reused while pyproject.toml and setup.sh are
    # unchanged, so a code change rebuilds only the project layer.
    if ! bah bud --isolation chroot --layers "${args[@]}" "${mounts[@]}" -f Dockerfile -t "$image" . \
        2>&1 | while IFS= read -r line; do echo "[$(date -u +%T)] $line"; done >"$cache_dir/build.log"; then
        tail -n 30 "$cache_dir/build.log" >&2
        exit 1
    fi
    grep -q "Using cache" "$cache_dir/build.log" && say "dependency layer reused from the layer cache"
    # Images this tag replaced (and the cache layers only they used) would pile up build after build.
    bah rmi --prune >/dev/null 2>&1 || true
}

image_size() {
    bah images --format '{{.Size}}' "$image" 2>/dev/null | head -n1
}

check_lineage() {
    # From outside the image: the host reads the run's DuckDB file with its own Python and duckdb.
    local db="$1" expected="$2" python=".venv/bin/python"
    if ! "$python" -c "import duckdb" 2>/dev/null; then
        python="$cache_dir/check-venv/bin/python"
        if ! "$python" -c "import duckdb" 2>/dev/null; then
            python3 -m venv "$cache_dir/check-venv"
            "$python" -m pip install -q duckdb==1.5.5 2>&1 | grep -v "is ignored" || true
        fi
    fi
    "$python" - "$db" "$expected" <<'PY'
import sys

import duckdb

db, expected = sys.argv[1], int(sys.argv[2])
con = duckdb.connect(db, read_only=True)
runs = con.execute("SELECT status FROM runs").fetchall()
rows = con.execute("SELECT source, status, error, audio_uri FROM item_status ORDER BY source").fetchall()
assert runs == [("completed",)], f"runs: {runs}"
assert len(rows) == expected, f"{len(rows)} lineage rows for {expected} videos: {rows}"
bad = [r for r in rows if r[1] != "succeeded" or not r[3]]
assert not bad, f"items that did not succeed: {bad}"
print(f"lineage: 1 completed run, {len(rows)} items succeeded")
PY
}

smoke() {
    local work ctr uid expected
    bah inspect --type image "$image" >/dev/null 2>&1 || { say "no image $image: run build first"; exit 1; }
    work="$(mktemp -d /var/tmp/thinksound-smoke.XXXXXX)"
    chown "$worker_uid:$worker_uid" "$work"
    ctr="$(bah from --quiet "$image")"
    # shellcheck disable=SC2064  # expand now: the names are fixed
    trap "bah rm '$ctr' >/dev/null 2>&1 || true; rm -rf '$work'" EXIT
    in_image() { bah run --isolation chroot --volume "$work:/work" "$ctr" -- /opt/thinksound/deploy/entrypoint.sh "$@"; }

    # The layer cache reuses only the dependency layer: the image must hold this checkout's code.
    local code='cd "$0" && find thinksound flows tasks storage cot_prompts -name "*.py" | sort | xargs sha256sum | sha256sum'
    if [ "$(in_image bash -c "$code" /opt/thinksound)" != "$(bash -c "$code" "$PWD")" ]; then
        say "the image's code differs from this checkout's"
        exit 1
    fi
    in_image python /opt/thinksound/scripts/make_samples.py /work/samples
    expected="$(find "$work/samples" -type f | wc -l)"
    in_image env HF_HUB_OFFLINE=1 thinksound run /work/samples --preset tiny --workdir /work/out --batch-size 4
    in_image thinksound weights verify --help >/dev/null
    in_image ray --version
    if in_image ray-worker 2>/dev/null; then say "ray-worker started without RAY_ADDRESS"; exit 1; fi

    uid="$(stat -c %u "$work/out/lineage.duckdb")"
    [ "$uid" = "$worker_uid" ] || { say "the run wrote as uid $uid, not the image's user $worker_uid"; exit 1; }
    check_lineage "$work/out/lineage.duckdb" "$expected"
    say "smoke ok: $expected videos dubbed inside $image as uid $uid"
}

case "${1:-}" in
    build)
        start=$SECONDS
        build_base
        build_image
        say "built $image in $((SECONDS - start)) s, $(image_size)"
        ;;
    smoke)
        start=$SECONDS
        smoke
        say "smoke took $((SECONDS - start)) s"
        ;;
    *)
        echo "usage: bash scripts/container.sh build|smoke" >&2
        exit 2
        ;;
esac
