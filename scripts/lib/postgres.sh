# Start and stop a throwaway PostgreSQL server on 127.0.0.1 for tests and benchmarks.
# Sourced by scripts/test and bench; sets PUSHGATE_TEST_POSTGRES.

pg_bin_dir() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x "$d/postgres" ]] && { echo "$d"; return 0; }
    done
    return 1
}

# `start_test_postgres durable` keeps fsync on (the benchmark); tests turn it off.
start_test_postgres() {
    local fsync="-c fsync=off"
    [[ "${1:-}" == durable ]] && fsync=""
    local bin
    if ! bin=$(pg_bin_dir); then
        echo "PostgreSQL server not found (Debian: apt-get install postgresql)" >&2
        return 1
    fi
    PG_TEST_DIR=$(mktemp -d /tmp/pushgate-pg.XXXXXX)
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    # initdb refuses to run as root; run the server as the postgres user then.
    PG_AS=()
    if [[ $(id -u) == 0 ]]; then
        chown postgres "$PG_TEST_DIR"
        PG_AS=(runuser -u postgres --)
    fi
    "${PG_AS[@]}" "$bin/initdb" -D "$PG_TEST_DIR/data" -U postgres --auth=trust -E UTF8 >"$PG_TEST_DIR/initdb.log" 2>&1 \
        || { cat "$PG_TEST_DIR/initdb.log" >&2; return 1; }
    "${PG_AS[@]}" "$bin/pg_ctl" -D "$PG_TEST_DIR/data" -l "$PG_TEST_DIR/server.log" -w \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_TEST_DIR $fsync -c max_connections=300" start >/dev/null \
        || { cat "$PG_TEST_DIR/server.log" >&2; return 1; }
    PG_BIN="$bin"
    export PUSHGATE_TEST_POSTGRES="postgres://postgres@127.0.0.1:$port/postgres"
    echo "test PostgreSQL on 127.0.0.1:$port" >&2
}

stop_test_postgres() {
    if [[ -n "${PG_TEST_DIR:-}" && -d "$PG_TEST_DIR/data" ]]; then
        "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_TEST_DIR/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$PG_TEST_DIR"
    fi
}
