#!/usr/bin/env bash
# Build the project's Dockerfile with podman and check the image without a Docker engine.
#
#  1. installs podman and debootstrap with apt-get when they are missing (needs root);
#  2. makes a Debian bookworm base (minbase plus python3, python3-venv, python3-pip) with
#     debootstrap and imports it as localhost/clconv-base:bookworm, unless that image exists;
#  3. runs `podman build --isolation=chroot` on the unchanged Dockerfile with
#     --build-arg BASE_IMAGE=localhost/clconv-base:bookworm;
#  4. checks the image: non-root user, no gcc/g++/cc/make, the entry point, health check and labels;
#  5. mounts the image read-only, starts its entry point under chroot as the image's user on
#     127.0.0.1 and a free port, runs the image's health check, sends one conv2d request and
#     compares the output with a direct computation;
#  6. prints the image size and the response, stops the server and unmounts the image.
#
# Containers cannot be started on hosts where podman's runtime hits rlimit errors, so step 5
# uses chroot in a private mount namespace instead. The server then shares the host's network
# namespace, which is why it binds 127.0.0.1 there instead of the image's 0.0.0.0.
#
# CI runs this only when CLCONV_IMAGE_TEST=1 is set (see docs/deploy.md). Settings, all optional:
#   CLCONV_IMAGE_TARGET   Dockerfile target to build and run (default cpu; gpu also runs here,
#                         on the CPU runtimes, because no NVIDIA driver is mounted)
#   CLCONV_IMAGE_TAG      tag of the built image (default localhost/clconv:test-<target>)
#   CLCONV_BASE_IMAGE     base image tag (default localhost/clconv-base:bookworm)
#   CLCONV_REBUILD_BASE=1 rebuild the debootstrap base even if it exists
#   DEBIAN_MIRROR         mirror for debootstrap (default http://deb.debian.org/debian)
#   CLCONV_PIP_CONFIG     "host" (default) mounts the host's /etc/pip.conf and CA bundle into the
#                         build's RUN steps so pip reaches PyPI through the host's TLS setup;
#                         "none" mounts nothing
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TARGET="${CLCONV_IMAGE_TARGET:-cpu}"
IMAGE="${CLCONV_IMAGE_TAG:-localhost/clconv:test-${TARGET}}"
BASE_IMAGE="${CLCONV_BASE_IMAGE:-localhost/clconv-base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PIP_CONFIG="${CLCONV_PIP_CONFIG:-host}"
SERVER_START_TIMEOUT_S=180

log() { printf '[build_test] %s\n' "$*" >&2; }
fail() { printf '[build_test] FAILED: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" != 0 ]; then
    fail "run as root: podman build --isolation=chroot, debootstrap and chroot need it"
fi

WORK="$(mktemp -d /tmp/clconv-build-test.XXXXXX)"
SERVER_PID=""
PORT=""
MOUNTED=""

cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        log "stopping the server (pid $SERVER_PID)"
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        if python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' \
            "$PORT" 2>/dev/null; then
            log "WARNING: something still listens on 127.0.0.1:$PORT after the server was stopped"
        fi
    fi
    if [ -n "$MOUNTED" ]; then
        podman image unmount "$IMAGE" >/dev/null || log "podman image unmount $IMAGE failed"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

install_tools() {
    local missing=()
    command -v podman >/dev/null || missing+=(podman)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    if [ "${#missing[@]}" -gt 0 ]; then
        command -v apt-get >/dev/null || fail "missing ${missing[*]} and no apt-get to install them"
        log "installing ${missing[*]} with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    log "$(podman --version), debootstrap $(dpkg-query -W -f='${Version}' debootstrap)"
}

make_base() {
    if [ "${CLCONV_REBUILD_BASE:-0}" != 1 ] && podman image exists "$BASE_IMAGE"; then
        log "reusing base image $BASE_IMAGE (CLCONV_REBUILD_BASE=1 rebuilds it)"
        return
    fi
    local rootfs="$WORK/rootfs"
    log "debootstrap bookworm (minbase + python3, python3-venv, python3-pip) from $MIRROR"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -n 30 "$WORK/debootstrap.log" >&2; fail "debootstrap failed"; }
    cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
    log "importing the rootfs as $BASE_IMAGE"
    tar -C "$rootfs" --numeric-owner -cf - . \
        | podman import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
}

build_image() {
    local volumes=()
    if [ "$PIP_CONFIG" = host ]; then
        # pip in the build stage reads /etc/pip.conf. On hosts whose TLS traffic goes through an
        # inspecting proxy, only the host's CA bundle verifies PyPI.
        [ -f /etc/pip.conf ] && volumes+=(--volume /etc/pip.conf:/etc/pip.conf:ro)
        [ -f /etc/ssl/certs/ca-certificates.crt ] \
            && volumes+=(--volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
    fi
    log "podman build --isolation=chroot --target $TARGET -t $IMAGE (${volumes[*]:-no mounts})"
    local started=$SECONDS
    podman build --isolation=chroot --format docker --target "$TARGET" \
        --build-arg BASE_IMAGE="$BASE_IMAGE" \
        --build-arg REVISION="$(git -C "$REPO_ROOT" rev-parse HEAD 2>/dev/null || echo unknown)" \
        --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
        "${volumes[@]}" -t "$IMAGE" -f "$REPO_ROOT/Dockerfile" "$REPO_ROOT" \
        >"$WORK/build.log" 2>&1 || { tail -n 40 "$WORK/build.log" >&2; fail "podman build failed"; }
    log "built $IMAGE in $((SECONDS - started)) s"
}

check_image_config() {
    local user entrypoint health
    user="$(podman image inspect --format '{{.Config.User}}' "$IMAGE")"
    entrypoint="$(podman image inspect --format '{{json .Config.Entrypoint}}' "$IMAGE")"
    health="$(podman image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE")"
    log "user $user, entrypoint $entrypoint"
    log "health check $health"
    case "$user" in "" | root | 0 | 0:*) fail "the image runs as root (User=$user)" ;; esac
    [ "$health" != null ] || fail "the image has no HEALTHCHECK"
    podman image inspect --format '{{range $k, $v := .Config.Labels}}{{$k}}={{$v}}{{"\n"}}{{end}}' \
        "$IMAGE" | grep '^org.opencontainers' >&2 || fail "the image has no OCI labels"
}

mount_image() {
    ROOT="$(podman image mount "$IMAGE")"
    MOUNTED=1
    log "image mounted read-only at $ROOT"
    local tool
    for tool in gcc g++ cc c++ make; do
        if [ -e "$ROOT/usr/bin/$tool" ] || [ -e "$ROOT/usr/local/bin/$tool" ]; then
            fail "the runtime image contains the compiler tool $tool"
        fi
    done
    log "no gcc, g++, cc, c++ or make in the image; clang-15 is there: $([ -e "$ROOT/usr/bin/clang-15" ] && echo yes || echo no)"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Run a command inside the image as its user, with the image's environment, in a private mount
# namespace that has /proc, /sys, /dev and a fresh tmpfs /tmp. Those mounts vanish with it.
# Every step execs the next (unshare, sh, chroot, env, the command), so the calling shell is
# replaced: call this in a subshell or in the background, where $! is then the command's own pid.
run_in_image() {
    local user entry image_env=() env_args=()
    user="$(podman image inspect --format '{{.Config.User}}' "$IMAGE")"
    mapfile -t image_env < <(podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$IMAGE")
    for entry in "${image_env[@]}"; do
        [ -n "$entry" ] && env_args+=("$entry")
    done
    env_args+=(HOME=/home/clconv CLCONV_HOST=127.0.0.1 "CLCONV_PORT=$PORT")
    # The inner script takes its values as arguments, so its single quotes are intended.
    # shellcheck disable=SC2016
    exec unshare --mount --propagation private -- /bin/sh -eu -c '
        root=$1; user=$2; shift 2
        mount -t proc proc "$root/proc"
        mount --rbind /sys "$root/sys"
        mount --rbind /dev "$root/dev"
        mount -t tmpfs -o mode=1777,size=1g tmpfs "$root/tmp"
        exec chroot --userspec="$user" "$root" /usr/bin/env -i "$@"
    ' run_in_image "$ROOT" "$user" "${env_args[@]}" "$@"
}

start_server() {
    PORT="$(free_port)"
    local entrypoint cmd
    mapfile -t entrypoint < <(podman image inspect --format '{{range .Config.Entrypoint}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d')
    mapfile -t cmd < <(podman image inspect --format '{{range .Config.Cmd}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d')
    log "starting ${entrypoint[*]} ${cmd[*]} on 127.0.0.1:$PORT under chroot"
    run_in_image "${entrypoint[@]}" "${cmd[@]}" >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    local deadline=$((SECONDS + SERVER_START_TIMEOUT_S))
    until python3 - "$PORT" <<'EOF' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/healthz", timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
EOF
    do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            cat "$WORK/server.log" >&2
            fail "the server in the image exited before /healthz returned 200"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            cat "$WORK/server.log" >&2
            fail "/healthz did not return 200 within $SERVER_START_TIMEOUT_S s"
        fi
        sleep 0.5
    done
    log "server healthy after $((SECONDS + SERVER_START_TIMEOUT_S - deadline)) s"
}

run_health_check() {
    local test_cmd
    mapfile -t test_cmd < <(podman image inspect --format '{{range .Config.Healthcheck.Test}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d')
    [ "${test_cmd[0]}" = CMD ] || fail "expected an exec-form HEALTHCHECK, got ${test_cmd[*]}"
    (run_in_image "${test_cmd[@]:1}") || fail "the image's health check failed against a healthy server"
    log "the image's health check (${test_cmd[*]:1}) passed"
}

send_conv2d() {
    python3 - "$PORT" <<'EOF'
import json
import sys
import urllib.request

port = sys.argv[1]
# 1x1x4x4 input 0..15, a 3x3 kernel of ones plus bias 0.5, padding 1: each output element is the
# sum of the input's 3x3 neighbourhood (zeros outside) plus 0.5.
size = 4
image = [[float(r * size + c) for c in range(size)] for r in range(size)]
body = {
    "input": {"shape": [1, 1, size, size], "dtype": "float32", "data": [[image]]},
    "weight": {"shape": [1, 1, 3, 3], "dtype": "float32", "data": [1.0] * 9},
    "bias": {"shape": [1], "dtype": "float32", "data": [0.5]},
    "padding": 1,
}
expected = []
for r in range(size):
    for c in range(size):
        total = sum(
            image[rr][cc]
            for rr in range(r - 1, r + 2)
            for cc in range(c - 1, c + 2)
            if 0 <= rr < size and 0 <= cc < size
        )
        expected.append(total + 0.5)

request = urllib.request.Request(
    f"http://127.0.0.1:{port}/v1/conv2d",
    data=json.dumps(body).encode(),
    headers={"Content-Type": "application/json"},
)
with urllib.request.urlopen(request, timeout=60) as response:
    status = response.status
    result = json.load(response)
print(f"POST /v1/conv2d -> {status}")
print(json.dumps(result, indent=1))

output = result["output"]
flat = output["data"]
while flat and isinstance(flat[0], list):
    flat = [x for row in flat for x in row]
if output["shape"] != [1, 1, size, size]:
    sys.exit(f"output shape {output['shape']}, expected [1, 1, {size}, {size}]")
worst = max(abs(a - b) for a, b in zip(flat, expected))
if worst > 1e-4:
    sys.exit(f"output differs from the direct computation by {worst}: {flat} vs {expected}")
print(f"output matches the direct computation (max abs error {worst:g})")
EOF
}

main() {
    install_tools
    make_base
    build_image
    check_image_config
    mount_image
    start_server
    run_health_check
    log "devices: $(python3 -c "import json, urllib.request; d = json.load(urllib.request.urlopen('http://127.0.0.1:$PORT/v1/devices', timeout=10)); print(d['default'], [x['id'] for x in d['devices']], d['skipped'])")"
    send_conv2d || { cat "$WORK/server.log" >&2; fail "the conv2d request failed"; }
    log "image size: $(podman image inspect --format '{{.Size}}' "$IMAGE" | numfmt --to=iec-i --suffix=B) ($IMAGE)"
    podman images --filter "reference=$IMAGE" >&2
    log "server log (last 15 lines):"
    tail -n 15 "$WORK/server.log" >&2
    log "PASSED"
}

main "$@"
