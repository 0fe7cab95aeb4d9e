# The second benchmark harness (`scripts/bench --harness nginx`): the shared
# harness of ../shared/bench-harness — nginx as fake APNs (HTTP/2 + TLS), FCM and
# Web Push (HTTPS/1.1), wrk as the homeserver — run against the release gateway.
# Sourced by scripts/bench; everything listens on 127.0.0.1 and every wrk run
# is bounded by `timeout`. See docs/performance.md, "Two harnesses".
#
#   scripts/bench --harness nginx [--store sqlite|none] [--service apns,fcm,webpush]
#                                 [--runs N] [--gateway BIN] [--null]
#   env: CONNS="64"  DURATION=10  WARMUP=3  (seconds, per level and run)
#        PUSHGATE_BENCH_HARNESS=<dir>  (default: ../shared/bench-harness from the repository)
#        RUST_LOG  (passed to the gateway; its config says `log.level: info`)
#        LOG_FORMAT=text|json  (the gateway's `log.format`; default text, its own default)
#        GATEWAY_STDERR=file|pipe  (where its log lines go: a file, default, or a pipe to `cat`)
# Prints a table (medians over runs); the raw rows are kept in target/bench/harness-*.tsv.

harness_usage() {
    sed -n '/^#   scripts\/bench --harness/,/^# Prints/p' scripts/lib/harness.sh | sed 's/^# \{0,3\}//' >&2
}

# nginx (with its http2 and ssl modules) and wrk, from Debian when missing.
harness_ensure_tools() {
    local missing=()
    command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
    command -v wrk >/dev/null || missing+=(wrk)
    install_missing_packages "the nginx harness" "${missing[@]}"
}

# A free TCP port on 127.0.0.1 (bound, then released).
harness_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

harness_port_busy() {
    [[ -n $(ss -ltnH "sport = :$1" 2>/dev/null) ]]
}

# Moves the copy's fixed ports (8443 APNs, 8444 FCM, 8445 Web Push, 8080 the
# null gateway) to free ones when any is taken (another run of the harness on
# this machine, say): the copy is ours, so its files are rewritten in place.
harness_ports() {
    local dir=$1 busy=0 p
    for p in 8443 8444 8445 8080; do harness_port_busy "$p" && busy=1; done
    HARNESS_NULL_PORT=8080
    [[ $busy == 0 ]] && return 0
    local apns fcm web null
    apns=$(harness_free_port) fcm=$(harness_free_port) web=$(harness_free_port) null=$(harness_free_port)
    echo "harness: the default ports are taken; using APNs $apns, FCM $fcm, Web Push $web, null $null" >&2
    grep -rlE '127\.0\.0\.1:(8443|8444|8445|8080)' "$dir" | while read -r f; do
        sed -i -e "s/127\.0\.0\.1:8443/127.0.0.1:$apns/g" -e "s/127\.0\.0\.1:8444/127.0.0.1:$fcm/g" \
            -e "s/127\.0\.0\.1:8445/127.0.0.1:$web/g" -e "s/127\.0\.0\.1:8080/127.0.0.1:$null/g" "$f"
    done
    HARNESS_NULL_PORT=$null
}

# Waits (at most 30 s) until the gateway answers /ready.
harness_wait_ready() {
    local port=$1 pid=$2 log=$3 i
    for i in $(seq 300); do
        curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$port/ready" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || { echo "the gateway exited:" >&2; cat "$log" >&2; return 1; }
        sleep 0.1
    done
    echo "the gateway is not ready after 30 s" >&2
    return 1
}

# Prints the table of results.tsv: one line per label and concurrency, medians over runs.
harness_table() {
    python3 - "$1" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
groups = {}
for r in rows:
    groups.setdefault((r["label"], int(r["conns"])), []).append(r)
med = lambda xs: statistics.median(xs) if xs else 0.0
print(f"{'case':<26} {'conns':>5} {'runs':>4} {'req/s':>8} {'gw CPU ms/notif':>16} {'p50 ms':>7} "
      f"{'p99 ms':>7} {'peak RSS MiB':>12} {'errors':>6} {'upstream-wrk':>12}")
bad = False
for (label, conns), rs in groups.items():
    f = lambda k: [float(r[k]) for r in rs]
    # gw_cpu_pct is % of one core over the wrk run, rps over the same run: CPU ms per request.
    cpu = [float(r["gw_cpu_pct"]) * 10.0 / max(1.0, float(r["rps"])) for r in rs]
    errors = sum(int(r["bad_status"]) + int(r["bad_body"]) + int(r["sock_err"]) for r in rs)
    drift = [int(r["up_minus_wrk"]) for r in rs]
    null = label.startswith("null")
    # Pushes the fakes saw minus requests answered: 0..conns (warm-up stragglers), else lost or doubled.
    off = [d for d in drift if not null and not (0 <= d <= conns)]
    bad |= errors > 0 or bool(off)
    print(f"{label:<26} {conns:>5} {len(rs):>4} {med(f('rps')):>8.0f} "
          f"{'-' if null else format(med(cpu), '.3f'):>16} {med(f('p50_ms')):>7.2f} {med(f('p99_ms')):>7.2f} "
          f"{'-' if null else format(max(f('gw_peak_rss_mb')), '.1f'):>12} {errors:>6} "
          f"{'-' if null else ','.join(map(str, drift)):>12}")
sys.exit(1 if bad else 0)
PY
}

harness_main() {
    local store=sqlite services="apns fcm webpush" runs=1 gateway=target/release/pushgate null=0
    while [[ $# -gt 0 ]]; do
        case $1 in
            --store) store=${2:?--store needs sqlite or none}; shift 2 ;;
            --service) services=${2:?--service needs names}; services=${services//,/ }; shift 2 ;;
            --runs) runs=${2:?--runs needs a number}; shift 2 ;;
            --gateway) gateway=${2:?--gateway needs a binary}; shift 2 ;;
            --null) null=1; shift ;;
            -h | --help) harness_usage; return 0 ;;
            *) echo "unknown argument $1" >&2; harness_usage; return 2 ;;
        esac
    done
    case $store in sqlite | none) ;; *) echo "--store is sqlite or none" >&2; return 2 ;; esac
    local src=${PUSHGATE_BENCH_HARNESS:-../shared/bench-harness}
    if [[ ! -f $src/bench.sh || ! -f $src/upstreams.sh || ! -f $src/gateway-config.sh ]]; then
        echo "the shared benchmark harness is not at $src (bench.sh, upstreams.sh, gateway-config.sh);" >&2
        echo "set PUSHGATE_BENCH_HARNESS to its directory" >&2
        return 1
    fi
    harness_ensure_tools
    [[ -x $gateway ]] || { echo "no gateway binary at $gateway" >&2; return 1; }
    gateway=$(realpath "$gateway")

    # The harness writes logs and certificates next to itself: work on a copy.
    local work
    work=$(mktemp -d /tmp/pushgate-harness.XXXXXX)
    HARNESS_WORK=$work
    HARNESS_GW_PID=""
    trap harness_stop EXIT
    cp -r "$src" "$work/harness"
    local H=$work/harness
    rm -rf "$H/logs" "$H/tmp"
    harness_ports "$H"
    "$H/upstreams.sh" start >/dev/null

    local port
    port=$(harness_free_port)
    # TMPDIR: gateway-config.sh puts the SQLite file there; this run's own, fresh.
    TMPDIR=$work "$H/gateway-config.sh" "$store" "$port" > "$work/gw.yaml"
    if [[ ${LOG_FORMAT:-text} != text ]]; then
        sed -i "s/^log:\$/log:\n  format: $LOG_FORMAT/" "$work/gw.yaml"
    fi
    local out=$work/out
    mkdir -p "$out" target/bench
    echo "harness: $src, gateway $gateway (store: $store, log level info, format ${LOG_FORMAT:-text} to a ${GATEWAY_STDERR:-file}${RUST_LOG:+, RUST_LOG=$RUST_LOG}), CONNS=\"${CONNS:-64}\" DURATION=${DURATION:-10}s WARMUP=${WARMUP:-3}s, $runs run(s)" >&2

    local run svc
    for run in $(seq "$runs"); do
        for svc in $services; do
            [[ -f $H/bodies/$svc.json ]] || { echo "no body $svc in the harness (apns, fcm, webpush)" >&2; return 2; }
            # A fresh gateway per service and run: a store, memory and connections of its own.
            rm -f "$work"/bench-harness-gateway.db*
            if [[ ${GATEWAY_STDERR:-file} == pipe ]]; then
                MIMALLOC_ARENA_EAGER_COMMIT=0 MIMALLOC_PURGE_DELAY=0 "$gateway" serve --config "$work/gw.yaml" >/dev/null 2> >(cat > "$work/gateway.log") &
            else
                MIMALLOC_ARENA_EAGER_COMMIT=0 MIMALLOC_PURGE_DELAY=0 "$gateway" serve --config "$work/gw.yaml" >/dev/null 2>"$work/gateway.log" &
            fi
            HARNESS_GW_PID=$!
            harness_wait_ready "$port" "$HARNESS_GW_PID" "$work/gateway.log"
            UNIQUE_EVENT=1 CONNS=${CONNS:-64} DURATION=${DURATION:-10} WARMUP=${WARMUP:-3} \
                GATEWAY_PID=$HARNESS_GW_PID OUT=$out EXPECT=ok \
                "$H/bench.sh" "http://127.0.0.1:$port/_matrix/push/v1/notify" "pushgate-$svc-$store" "$svc" >&2
            kill "$HARNESS_GW_PID" 2>/dev/null || true
            wait "$HARNESS_GW_PID" 2>/dev/null || true
            HARNESS_GW_PID=""
        done
        if [[ $null == 1 ]]; then
            # nginx answering /notify itself: the ceiling of wrk + loopback on this machine.
            UNIQUE_EVENT=1 CONNS=${CONNS:-64} DURATION=${DURATION:-10} WARMUP=${WARMUP:-3} \
                GATEWAY_PID=$(cat "$H/logs/nginx.pid") OUT=$out EXPECT=ok \
                "$H/bench.sh" "http://127.0.0.1:$HARNESS_NULL_PORT/_matrix/push/v1/notify" "null-gateway" apns >&2
        fi
    done
    local keep
    keep=target/bench/harness-$(date -u +%Y%m%dT%H%M%SZ)-$store.tsv
    cp "$out/results.tsv" "$keep"
    echo
    echo "nginx harness, store: $store (gateway CPU per notification from /proc/<pid>/stat over each wrk run)"
    local rc=0
    harness_table "$keep" || rc=$?
    echo "rows: $keep" >&2
    [[ $rc == 0 ]] || echo "FAILED: a request failed, or the fakes saw more or fewer pushes than requests answered" >&2
    return "$rc"
}

harness_stop() {
    if [[ -n ${HARNESS_GW_PID:-} ]]; then
        kill "$HARNESS_GW_PID" 2>/dev/null || true
        wait "$HARNESS_GW_PID" 2>/dev/null || true
    fi
    if [[ -n ${HARNESS_WORK:-} && -d $HARNESS_WORK ]]; then
        "$HARNESS_WORK/harness/upstreams.sh" stop >/dev/null 2>&1 || true
        rm -rf "$HARNESS_WORK"
    fi
}
