# shellcheck shell=bash
# Real servers for the tests, from Debian's packages (sourced by .ci/run; no fakes, no mocks).
#
#   source .ci/services.sh
#   install_services          # apt-get update once per run, then install what is missing
#   start_redis               # a redis-server of our own on a free loopback port
#   start_postgres            # a PostgreSQL cluster of our own (initdb) on a free port
#   trap 'stop_services' EXIT # (or call it from the existing EXIT trap)
#
# start_redis exports KOLBO_TEST_REDIS_URL=redis://127.0.0.1:PORT/0 for whoever wants a
# server that is already up; tests/test_rate_store_servers.py starts servers of its own from
# the same redis-server binary (it needs to stop and restart them). start_postgres exports
# KOLBO_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:PORT/postgres the same way (the
# journal tests that crash a server start clusters of their own). As root the cluster runs as
# the `postgres` user, which PostgreSQL requires. CI=true makes those tests fail, not skip,
# when a server is missing.

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

# The newest /usr/lib/postgresql/VERSION/bin (Debian keeps initdb and pg_ctl there).
_postgres_bin() {
    local dir
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    [ -n "$dir" ] && [ -x "$dir/initdb" ] && echo "$dir"
}

install_services() {
    local missing=()
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    _postgres_bin >/dev/null || missing+=(postgresql)
    [ "${#missing[@]}" -eq 0 ] && return 0
    echo "=== installing ${missing[*]} (apt-get) ==="
    # The packages' own services are not used: servers are started here and by the tests.
    _services_apt_install "${missing[@]}" \
        || echo "${missing[*]} missing: their tests will fail (CI=true)" >&2
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

# Run a PostgreSQL tool as the `postgres` user when we are root (it refuses root).
_as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start_postgres() {
    local bin port dir
    bin="$(_postgres_bin)" || return 1
    port="$(_services_free_port)"
    # Not under $KOLBO_SERVICES_DIR: the postgres user must reach it (mktemp -d is 0700).
    dir="$(mktemp -d /tmp/kolbo-ci-pg.XXXXXX)"
    echo "$dir" >"$KOLBO_SERVICES_DIR/postgres.dir"
    if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$dir"; fi
    if ! _as_postgres "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 \
            >"$KOLBO_SERVICES_DIR/initdb.log" 2>&1; then
        echo "services: initdb failed:" >&2
        tail -n 20 "$KOLBO_SERVICES_DIR/initdb.log" >&2
        return 1
    fi
    if ! _as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
            -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start \
            >/dev/null 2>&1; then
        echo "services: PostgreSQL did not start:" >&2
        tail -n 20 "$dir/log" >&2
        return 1
    fi
    KOLBO_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$port/postgres"
    export KOLBO_TEST_POSTGRES_URL
    echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on port $port ($dir)"
}

stop_postgres() {
    local file="$KOLBO_SERVICES_DIR/postgres.dir" dir bin
    [ -f "$file" ] || return 0
    dir="$(cat "$file")"
    rm -f "$file"
    bin="$(_postgres_bin)" || true
    if [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ]; then
        _as_postgres "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 \
            || _as_postgres "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 \
            || true
    fi
    case "$dir" in /tmp/kolbo-ci-pg.*) rm -rf "$dir" ;; esac
    unset KOLBO_TEST_POSTGRES_URL
}

stop_services() {
    stop_redis
    stop_postgres
    rm -rf "$KOLBO_SERVICES_DIR"
}
