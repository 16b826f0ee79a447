#!/usr/bin/env bash
# The services the tests talk to, installed and started idempotently, every listener on 127.0.0.1:
#
#   moto (AWS: S3, SSM, Secrets Manager, ECR)  http://127.0.0.1:45000
#   a Docker engine (dockerd --bridge=none)    /var/run/docker.sock
#   an OCI registry without auth               127.0.0.1:45001 (plain HTTP)
#   an OCI registry with htpasswd auth         127.0.0.1:45002 (plain HTTP, basic auth; users
#                                              buildagent, and AWS with moto's ECR token password)
#   a local base image                         buildagent-test/busybox:latest (and its rootfs tar)
#   skopeo, umoci, zstd
#
# Sourced by scripts/test.sh, which then has the BUILDAGENT_TEST_* variables exported. Run alone:
#   scripts/services.sh [start]   start whatever is not running, print the exports on stdout
#                                 (eval "$(scripts/services.sh)" sets them in a shell)
#   scripts/services.sh env       print the exports only
#   scripts/services.sh stop      stop what this script started (from its pid files)
#
# State, configuration, logs (NAME.log, the previous run's NAME.log.1) and pid files live in
# /var/tmp/buildagent-services/. A service that already answers on its port is left alone, so a
# warm run only checks the ports. Nothing is pulled from the internet: the base image is made
# from Debian's busybox-static.
#
# The htpasswd registry serves plain HTTP: distribution 2.8 (Debian's docker-registry) does not
# require TLS for htpasswd auth, and Docker allows plain HTTP to registries on 127.0.0.0/8.
# skopeo needs --tls-verify=false (or --src-/--dest-tls-verify=false) for both registries.
# dockerd picks its storage driver itself (overlay2 on an ext4 root) and runs without a bridge or
# iptables rules: test containers use --network host and so talk to loopback only.

# Prefixed names: this file is sourced into scripts/test.sh (which then runs it as a child).
BUILDAGENT_SERVICES_DIR=/var/tmp/buildagent-services
BUILDAGENT_SERVICES_MOTO_PORT=45000
BUILDAGENT_SERVICES_REGISTRY_PORT=45001
BUILDAGENT_SERVICES_REGISTRY_AUTH_PORT=45002
BUILDAGENT_SERVICES_USER=buildagent
BUILDAGENT_SERVICES_PASSWORD=buildagent-secret
# The htpasswd registry also takes what moto's ECR GetAuthorizationToken decodes to,
# `AWS:<account>-auth-token` (moto's default account is 123456789012), so a push whose
# credentials come from the token API can be tested against it (BUILDAGENT_ECR_ENDPOINTS).
BUILDAGENT_SERVICES_ECR_USER=AWS
BUILDAGENT_SERVICES_ECR_PASSWORD=123456789012-auth-token
BUILDAGENT_SERVICES_IMAGE=buildagent-test/busybox:latest
BUILDAGENT_SERVICES_DOCKER_SOCK=/var/run/docker.sock

_svc_say() { printf 'services: %s\n' "$*" >&2; }
_svc_die() {
    printf 'services: error: %s\n' "$*" >&2
    exit 1
}

# The HTTP status of GET URL (000 when nothing answers). Loopback only: never through a proxy.
_svc_http_status() {
    curl --noproxy '*' -s -o /dev/null -w '%{http_code}' --connect-timeout 1 --max-time 3 "$@" ||
        true
}

_svc_docker_up() {
    [ -S "$BUILDAGENT_SERVICES_DOCKER_SOCK" ] &&
        [ "$(curl -s --max-time 3 --unix-socket "$BUILDAGENT_SERVICES_DOCKER_SOCK" \
            http://localhost/_ping 2>/dev/null)" = OK ]
}

# Waits until the command "$@" succeeds; after SECONDS seconds fails, pointing at LOG.
_svc_wait() {
    local what=$1 seconds=$2 log=$3
    shift 3
    local deadline=$((SECONDS + seconds))
    until "$@"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            [ -f "$log" ] && tail -n 20 "$log" >&2
            _svc_die "$what did not answer within ${seconds}s (log: $log)"
        fi
        sleep 0.2
    done
}

# Installs, in one apt-get run, the Debian packages whose command is missing.
_svc_packages() {
    local missing=() command package
    for command in curl:curl dockerd:docker.io docker:docker.io docker-registry:docker-registry \
        htpasswd:apache2-utils skopeo:skopeo umoci:umoci zstd:zstd; do
        package=${command#*:}
        command=${command%%:*}
        command -v "$command" >/dev/null 2>&1 || missing+=("$package")
    done
    # The base image needs a static busybox; Debian's busybox package is dynamic.
    dpkg-query -W -f '${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' ||
        missing+=(busybox-static)
    [ ${#missing[@]} -eq 0 ] || _svc_apt_install "${missing[@]}"
}

_svc_apt_install() {
    _svc_say "installing $* (Debian)"
    # Never let a package start its own service (docker.io's would make a bridge on a
    # private-range address, docker-registry's would listen on *:5000).
    local policy=/usr/sbin/policy-rc.d made_policy=
    if [ ! -e $policy ]; then
        printf '#!/bin/sh\nexit 101\n' >$policy && chmod +x $policy && made_policy=1
    fi
    local status=0
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
    } >"$BUILDAGENT_SERVICES_DIR/apt.log" 2>&1 || status=$?
    if [ -n "$made_policy" ]; then rm -f $policy; fi
    if [ $status -ne 0 ]; then
        tail -n 20 "$BUILDAGENT_SERVICES_DIR/apt.log" >&2
        _svc_die "apt-get install $* failed (log: $BUILDAGENT_SERVICES_DIR/apt.log)"
    fi
}

# Starts "$@" in its own session, detached, with its output in NAME.log and its pid in NAME.pid.
_svc_spawn() {
    local name=$1
    shift
    local log=$BUILDAGENT_SERVICES_DIR/$name.log
    [ -f "$log" ] && mv -f "$log" "$log.1"
    # The inner shell writes its own pid and then becomes the service, so the pid file holds the
    # service's pid whatever setsid does.
    # shellcheck disable=SC2016 # expanded by the inner shell
    setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$BUILDAGENT_SERVICES_DIR/$name.pid" "$@" \
        >"$log" 2>&1 </dev/null 9>&- &
    disown $! 2>/dev/null || true
}

_svc_moto_up() {
    [ "$(_svc_http_status "http://127.0.0.1:$BUILDAGENT_SERVICES_MOTO_PORT/moto-api/")" = 200 ]
}

# moto 5.2.5 or later: earlier 5.2 releases answer CompleteMultipartUpload with a
# `CompleteMultipartUploadResponse` root element, which the AWS SDK for Rust rejects.
BUILDAGENT_SERVICES_MOTO_VERSION=5.2.5

_svc_moto_installed() {
    python3 - "$BUILDAGENT_SERVICES_MOTO_VERSION" >/dev/null 2>&1 <<'PY'
import importlib.metadata, sys
have = tuple(int(p) for p in importlib.metadata.version("moto").split(".")[:3])
need = tuple(int(p) for p in sys.argv[1].split("."))
import moto.server  # the server extra's dependencies are there too
sys.exit(0 if have >= need else 1)
PY
}

_svc_moto() {
    if ! _svc_moto_installed; then
        _svc_say "installing moto[server]==$BUILDAGENT_SERVICES_MOTO_VERSION from PyPI"
        python3 -m pip install -q "moto[server]==$BUILDAGENT_SERVICES_MOTO_VERSION" \
            >"$BUILDAGENT_SERVICES_DIR/pip.log" 2>&1 ||
            _svc_die "pip install moto[server] failed (log: $BUILDAGENT_SERVICES_DIR/pip.log)"
        # A server of ours still running the old version is replaced.
        _svc_stop_one moto moto.server
    fi
    _svc_moto_up && return 0
    _svc_say "starting moto on 127.0.0.1:$BUILDAGENT_SERVICES_MOTO_PORT"
    # The same python3 that imports moto, whatever moto_server shim is first on PATH.
    _svc_spawn moto python3 -m moto.server -H 127.0.0.1 -p "$BUILDAGENT_SERVICES_MOTO_PORT"
    _svc_wait "moto on 127.0.0.1:$BUILDAGENT_SERVICES_MOTO_PORT" 60 \
        "$BUILDAGENT_SERVICES_DIR/moto.log" _svc_moto_up
}

_svc_docker() {
    _svc_docker_up && return 0
    _svc_say "starting dockerd (no bridge, no iptables)"
    # The unix socket only (no TCP), no default bridge (it would take a private-range address),
    # no iptables rules. The storage driver is dockerd's own choice (overlay2 here). dockerd
    # writes its pid file itself and refuses to start when one names a live process.
    local log=$BUILDAGENT_SERVICES_DIR/dockerd.log pidfile=$BUILDAGENT_SERVICES_DIR/dockerd.pid
    if [ -f "$pidfile" ]; then
        _svc_is "$(cat "$pidfile")" dockerd &&
            _svc_die "dockerd (pid $(cat "$pidfile")) runs but does not answer on $BUILDAGENT_SERVICES_DOCKER_SOCK (log: $log); scripts/services.sh stop ends it"
        rm -f "$pidfile"
    fi
    [ -f "$log" ] && mv -f "$log" "$log.1"
    setsid dockerd --host "unix://$BUILDAGENT_SERVICES_DOCKER_SOCK" --pidfile "$pidfile" \
        --bridge=none --iptables=false --ip6tables=false \
        >"$log" 2>&1 </dev/null 9>&- &
    disown $! 2>/dev/null || true
    _svc_wait "dockerd on $BUILDAGENT_SERVICES_DOCKER_SOCK" 90 "$log" _svc_docker_up
}

_svc_base_image() {
    local tar=$BUILDAGENT_SERVICES_DIR/busybox-rootfs.tar
    if [ ! -s "$tar" ]; then
        local busybox
        busybox=$(command -v busybox) || _svc_die "busybox is missing (Debian's busybox-static)"
        _svc_say "making the busybox rootfs $tar"
        local root
        root=$(mktemp -d "$BUILDAGENT_SERVICES_DIR/rootfs.XXXXXX")
        mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,var/tmp,proc,sys,dev}
        chmod 0755 "$root"
        chmod 1777 "$root/tmp" "$root/var/tmp"
        chmod 0700 "$root/root"
        cp "$busybox" "$root/bin/busybox"
        # Relative links, so the unpacked tree also reads right from outside a container.
        local applet target
        for applet in $("$root/bin/busybox" --list-full); do
            case $applet in
            bin/busybox | linuxrc) continue ;;
            bin/*) target=busybox ;;
            sbin/*) target=../bin/busybox ;;
            usr/bin/* | usr/sbin/*) target=../../bin/busybox ;;
            *)
                rm -rf "$root"
                _svc_die "busybox applet in an unexpected place: $applet"
                ;;
            esac
            ln -s "$target" "$root/$applet"
        done
        printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
            >"$root/etc/passwd"
        printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
        # Reproducible: the same busybox gives the same bytes.
        tar -C "$root" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$tar.tmp" .
        mv -f "$tar.tmp" "$tar"
        rm -rf "$root"
    fi
    if ! docker image inspect "$BUILDAGENT_SERVICES_IMAGE" >/dev/null 2>&1; then
        _svc_say "importing $BUILDAGENT_SERVICES_IMAGE"
        docker import - "$BUILDAGENT_SERVICES_IMAGE" <"$tar" >/dev/null ||
            _svc_die "docker import of $tar failed"
        docker run --rm --network host "$BUILDAGENT_SERVICES_IMAGE" true ||
            _svc_die "a container of $BUILDAGENT_SERVICES_IMAGE does not run (log: $BUILDAGENT_SERVICES_DIR/dockerd.log)"
    fi
}

# Writes FILE from stdin unless it already holds exactly that.
_svc_write() {
    local new
    new=$(cat)
    [ -f "$1" ] && [ "$(cat "$1")" = "$new" ] && return 0
    printf '%s\n' "$new" >"$1"
}

# Adds USER with PASSWORD to the htpasswd FILE unless it already holds exactly that (other
# users are kept). The registry rereads the file when it changes, so a running one sees it.
_svc_htpasswd_user() {
    local file=$1 user=$2 password=$3
    htpasswd -vb "$file" "$user" "$password" >/dev/null 2>&1 && return 0
    if [ -f "$file" ]; then
        htpasswd -Bb "$file" "$user" "$password" 2>/dev/null
    else
        htpasswd -Bbc "$file" "$user" "$password" 2>/dev/null
    fi || _svc_die "htpasswd could not write $file"
}

# A registry NAME on PORT; AUTH non-empty adds htpasswd auth. Up means GET /v2/ gives WANT.
_svc_registry() {
    local name=$1 port=$2 auth=$3 want=$4 label
    label="${auth:+htpasswd }registry"
    local dir=$BUILDAGENT_SERVICES_DIR/$name
    mkdir -p "$dir/data"
    if [ -n "$auth" ]; then
        # Before the check below: a registry already running gets a user added since it started.
        _svc_htpasswd_user "$dir/htpasswd" "$BUILDAGENT_SERVICES_USER" "$BUILDAGENT_SERVICES_PASSWORD"
        _svc_htpasswd_user "$dir/htpasswd" "$BUILDAGENT_SERVICES_ECR_USER" \
            "$BUILDAGENT_SERVICES_ECR_PASSWORD"
    fi
    [ "$(_svc_http_status "http://127.0.0.1:$port/v2/")" = "$want" ] && return 0
    local auth_config=
    if [ -n "$auth" ]; then
        auth_config="auth:
  htpasswd:
    realm: buildagent-test
    path: $dir/htpasswd"
    fi
    _svc_write "$dir/config.yml" <<EOF
# Written by scripts/services.sh.
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: buildagent-test-$name
$auth_config
EOF
    _svc_say "starting the $label on 127.0.0.1:$port"
    _svc_spawn "$name" docker-registry serve "$dir/config.yml"
    _svc_wait "the $label on 127.0.0.1:$port" 30 "$BUILDAGENT_SERVICES_DIR/$name.log" \
        _svc_registry_up "$port" "$want"
}

_svc_registry_up() { [ "$(_svc_http_status "http://127.0.0.1:$1/v2/")" = "$2" ]; }

_svc_exports() {
    cat <<EOF
export BUILDAGENT_TEST_AWS_ENDPOINT=http://127.0.0.1:$BUILDAGENT_SERVICES_MOTO_PORT
export BUILDAGENT_TEST_AWS_ACCESS_KEY_ID=testing
export BUILDAGENT_TEST_AWS_SECRET_ACCESS_KEY=testing
export BUILDAGENT_TEST_AWS_REGION=us-east-1
export BUILDAGENT_TEST_REGISTRY=127.0.0.1:$BUILDAGENT_SERVICES_REGISTRY_PORT
export BUILDAGENT_TEST_REGISTRY_AUTH=127.0.0.1:$BUILDAGENT_SERVICES_REGISTRY_AUTH_PORT
export BUILDAGENT_TEST_REGISTRY_USER=$BUILDAGENT_SERVICES_USER
export BUILDAGENT_TEST_REGISTRY_PASSWORD=$BUILDAGENT_SERVICES_PASSWORD
export BUILDAGENT_TEST_REGISTRY_ECR_PASSWORD=$BUILDAGENT_SERVICES_ECR_PASSWORD
export BUILDAGENT_TEST_BASE_IMAGE=$BUILDAGENT_SERVICES_IMAGE
export BUILDAGENT_TEST_BASE_ROOTFS=$BUILDAGENT_SERVICES_DIR/busybox-rootfs.tar
EOF
}

buildagent_services_start() {
    [ "$(id -u)" = 0 ] || _svc_die "run as root (dockerd and apt-get need it)"
    mkdir -p "$BUILDAGENT_SERVICES_DIR"
    # One start at a time on a machine: two test runs starting together would race for the
    # ports and the pid files. Started services get the lock's descriptor closed (9>&-).
    exec 9>"$BUILDAGENT_SERVICES_DIR/lock"
    flock 9
    _svc_packages
    _svc_moto
    _svc_docker
    _svc_base_image
    _svc_registry registry "$BUILDAGENT_SERVICES_REGISTRY_PORT" "" 200
    _svc_registry registry-auth "$BUILDAGENT_SERVICES_REGISTRY_AUTH_PORT" htpasswd 401
}

# Whether PID is a live process whose command line holds PROGRAM.
_svc_is() {
    [ -n "$1" ] && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q -- "$2"
}

# Stops one service from its pid file, if that pid is still the program this script started.
_svc_stop_one() {
    local name=$1 program=$2 pidfile=$BUILDAGENT_SERVICES_DIR/$1.pid pid
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if _svc_is "$pid" "$program"; then
        _svc_say "stopping $name (pid $pid)"
        kill -TERM "$pid"
        local deadline=$((SECONDS + 30))
        while kill -0 "$pid" 2>/dev/null; do
            if [ "$SECONDS" -ge "$deadline" ]; then
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.2
        done
    fi
    rm -f "$pidfile"
}

buildagent_services_stop() {
    _svc_stop_one registry-auth docker-registry
    _svc_stop_one registry docker-registry
    _svc_stop_one moto moto.server
    _svc_stop_one dockerd dockerd
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    case "${1:-start}" in
    start)
        buildagent_services_start
        _svc_exports
        ;;
    env) _svc_exports ;;
    stop) buildagent_services_stop ;;
    *) _svc_die "usage: $0 [start|env|stop]" ;;
    esac
else
    # Sourced (scripts/test.sh): start in a child process, so that its lock and its exit on an
    # error stay there, then export the variables here.
    bash "${BASH_SOURCE[0]}" start >/dev/null || return 1
    eval "$(bash "${BASH_SOURCE[0]}" env)"
fi
