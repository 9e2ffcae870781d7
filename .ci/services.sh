# shellcheck shell=bash
# Real servers for the tests, from Debian's packages (sourced by .ci/run; no fakes, no mocks).
#
#   source .ci/services.sh
#   install_services          # apt-get update once per run, then install what is missing
#   start_redis               # a redis-server of our own on a free loopback port
#   trap 'stop_services' EXIT # (or call it from the existing EXIT trap)
#
# start_redis exports KOLBO_TEST_REDIS_URL=redis://127.0.0.1:PORT/0 for whoever wants a
# server that is already up; tests/test_rate_store_servers.py starts servers of its own from
# the same redis-server binary (it needs to stop and restart them). CI=true makes those tests
# fail, not skip, when redis-server is missing.

KOLBO_SERVICES_DIR="${KOLBO_SERVICES_DIR:-$(mktemp -d)}"
KOLBO_APT_UPDATED="${KOLBO_APT_UPDATED:-}"

_services_sudo() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        echo "services: $1 needs root and there is no sudo" >&2
        return 1
    fi
}

# apt-get install -y PACKAGE... (quietly; apt-get update first, once per run).
_services_apt_install() {
    local log
    log="$(mktemp)"
    if [ -z "$KOLBO_APT_UPDATED" ]; then
        if ! _services_sudo apt-get update -qq >"$log" 2>&1; then
            echo "services: apt-get update failed:" >&2
            tail -n 20 "$log" >&2
            rm -f "$log"
            return 1
        fi
        KOLBO_APT_UPDATED=1
        export KOLBO_APT_UPDATED
    fi
    if ! _services_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" \
            >"$log" 2>&1; then
        echo "services: apt-get could not install $*:" >&2
        tail -n 20 "$log" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}

install_services() {
    if command -v redis-server >/dev/null 2>&1; then
        return 0
    fi
    echo "=== installing redis-server (apt-get) ==="
    # The package's own service is not used: servers are started by start_redis and the tests.
    _services_apt_install redis-server \
        || echo "redis-server is missing: the Redis tests will fail (CI=true)" >&2
}

_services_free_port() {
    python3 - <<'EOF'
import socket
with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1])
EOF
}

start_redis() {
    command -v redis-server >/dev/null 2>&1 || return 1
    local port pid i
    port="$(_services_free_port)"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$KOLBO_SERVICES_DIR" --daemonize no >"$KOLBO_SERVICES_DIR/redis.log" 2>&1 &
    pid=$!
    echo "$pid" >"$KOLBO_SERVICES_DIR/redis.pid"
    for i in $(seq 1 100); do
        if redis-cli -p "$port" ping >/dev/null 2>&1; then
            KOLBO_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
            export KOLBO_TEST_REDIS_URL
            echo "redis-server $(redis-server --version | awk '{print $3}') on port $port (pid $pid)"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then break; fi
        sleep 0.1
    done
    echo "services: redis-server did not start:" >&2
    tail -n 20 "$KOLBO_SERVICES_DIR/redis.log" >&2
    return 1
}

stop_redis() {
    local file="$KOLBO_SERVICES_DIR/redis.pid" pid
    [ -f "$file" ] || return 0
    pid="$(cat "$file")"
    rm -f "$file"
    if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    unset KOLBO_TEST_REDIS_URL
}

stop_services() {
    stop_redis
    rm -rf "$KOLBO_SERVICES_DIR"
}
