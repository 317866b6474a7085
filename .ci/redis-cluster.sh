#!/usr/bin/env bash
# The Redis backend on a real Redis Cluster and over TLS (issue 16): installs Debian's
# redis-server and openssl if missing, then starts, in a throwaway directory, on loopback:
# - a cluster of six nodes (three primaries, one replica each) made with
#   `redis-cli --cluster create`, node timeout 1 s, no persistence;
# - one TLS server with a CA and a server certificate made here and now (SAN DNS:localhost
#   and IP:127.0.0.1), and a second, unrelated CA for the mismatch test;
# - one plain server with a password (made here) for the wrong-password test.
# Then runs the shared tests on the cluster (tests/redis.rs), tests/redis_cluster.rs
# (failover, a hung node, a paused node, TLS, passwords, a lazy store) and the demo's
# cluster test, and stops every server it started, by pid, however the tests end.
#
#   bash .ci/redis-cluster.sh           the tests
#   bash .ci/redis-cluster.sh bench     `cargo bench --features redis --bench redis` on the rig
#   bash .ci/redis-cluster.sh run CMD…  CMD with the rig's variables set (by hand)
#
# Ports (each overridable, so that a run by hand does not meet a CI run):
#   BATON_CLUSTER_PORT          the first of six cluster ports (default 7100: 7100..7105)
#   BATON_REDIS_TLS_PORT        the TLS server (default 6395)
#   BATON_REDIS_PASSWORD_PORT   the server with a password (default 6396)
#   BATON_REDIS_LAZY_PORT       left free: the lazy-store test starts its own server
#                               there (default 6397)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
began=$SECONDS

base="${BATON_CLUSTER_PORT:-7100}"
tls_port="${BATON_REDIS_TLS_PORT:-6395}"
pw_port="${BATON_REDIS_PASSWORD_PORT:-6396}"
lazy_port="${BATON_REDIS_LAZY_PORT:-6397}"
cluster_ports=()
for i in 0 1 2 3 4 5; do cluster_ports+=($((base + i))); done
all_ports=("${cluster_ports[@]}" "$tls_port" "$pw_port" "$lazy_port")

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
command -v openssl >/dev/null || need+=(openssl)
if [ "${#need[@]}" -gt 0 ]; then
    echo "== installing ${need[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"
fi

answers() { redis-cli -h 127.0.0.1 -p "$1" ping >/dev/null 2>&1; }
# A TLS server answers only a TLS client: probe the port itself too.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Another run's servers (or anyone's) on these ports would be tested against, then
# shut down by `stop`: refuse instead.
for p in "${all_ports[@]}"; do
    if answers "$p" || listening "$p"; then
        echo "error: something already listens on 127.0.0.1:$p; set BATON_CLUSTER_PORT," \
            "BATON_REDIS_TLS_PORT, BATON_REDIS_PASSWORD_PORT or BATON_REDIS_LAZY_PORT" >&2
        exit 1
    fi
done

dir="$(mktemp -d)"
stop() {
    # Only the servers this run started: each node's pid file (a node the failover
    # test killed and restarted has written its new pid there), and only if that pid
    # is still a redis-server on our port (a stale pid may belong to anyone now).
    for pidfile in "$dir"/*/redis.pid; do
        [ -f "$pidfile" ] || continue
        pid="$(cat "$pidfile")"
        port="$(basename "$(dirname "$pidfile")")"
        ours() { tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "redis-server.*:$port"; }
        ours || continue
        kill -CONT "$pid" 2>/dev/null || true # a paused node must run to exit
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do ours || break; sleep 0.1; done
        if ours; then kill -9 "$pid" 2>/dev/null || true; fi
    done
    rm -rf "$dir"
    echo "== redis-cluster.sh: $((SECONDS - began)) s in all"
}
trap stop EXIT

# Each server gets a directory named after its port with a config file in it, so that
# a test can restart a node it killed exactly as it was (`redis-server PORT/redis.conf`).
start_server() { # port, then config lines
    local port="$1"
    shift
    mkdir -p "$dir/$port"
    {
        echo "bind 127.0.0.1"
        echo "port $port"
        echo "dir $dir/$port"
        echo "daemonize yes"
        echo "pidfile $dir/$port/redis.pid"
        echo "logfile $dir/$port/redis.log"
        echo "save \"\""
        echo "appendonly no"
        echo "maxmemory-policy noeviction"
        # A replica syncs at once (not 5 s later); SIGTERM exits at once (no waiting
        # for replicas: nothing here is kept).
        echo "repl-diskless-sync-delay 0"
        echo "shutdown-on-sigterm now"
        printf '%s\n' "$@"
    } >"$dir/$port/redis.conf"
    redis-server "$dir/$port/redis.conf"
}

wait_for() { # what, then a command that succeeds once it holds (bounded: 30 s)
    local what="$1"
    shift
    for _ in $(seq 300); do
        "$@" && return 0
        sleep 0.1
    done
    echo "error: $what did not happen within 30 s" >&2
    for log in "$dir"/*/redis.log; do echo "-- $log"; tail -n 20 "$log"; done >&2
    exit 1
}

echo "== redis cluster on 127.0.0.1:${cluster_ports[0]}..${cluster_ports[5]}"
for p in "${cluster_ports[@]}"; do
    # DEBUG SLEEP (a hung node) from loopback only. Without full coverage a failing
    # primary's shard alone stops answering (with it, the whole cluster answers
    # CLUSTERDOWN until a replica takes over).
    start_server "$p" "cluster-enabled yes" "cluster-node-timeout 1000" \
        "cluster-config-file nodes-$p.conf" "enable-debug-command local" \
        "cluster-require-full-coverage no"
done
for p in "${cluster_ports[@]}"; do wait_for "node $p to listen" answers "$p"; done
seeds=()
for p in "${cluster_ports[@]}"; do seeds+=("127.0.0.1:$p"); done
redis-cli --cluster create "${seeds[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" ||
    { cat "$dir/create.log" >&2; exit 1; }
cluster_ok() {
    for p in "${cluster_ports[@]}"; do
        redis-cli -h 127.0.0.1 -p "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok' ||
            return 1
    done
    # Every node knows three primaries and three replicas, and each replica is in sync
    # (the failover test waits for replicas to acknowledge).
    nodes="$(redis-cli -h 127.0.0.1 -p "$base" cluster nodes)"
    [ "$(grep -cE '[ ,]master ' <<<"$nodes")" = 3 ] &&
        [ "$(grep -cE '[ ,]slave ' <<<"$nodes")" = 3 ] &&
        for p in "${cluster_ports[@]}"; do
            info="$(redis-cli -h 127.0.0.1 -p "$p" info replication)"
            if grep -q '^role:slave' <<<"$info"; then
                grep -q '^master_link_status:up' <<<"$info" || return 1
            fi
        done
}
wait_for "cluster_state:ok on every node" cluster_ok

echo "== certificates (openssl) and a TLS server on 127.0.0.1:$tls_port"
tls="$dir/tls"
mkdir -p "$tls"
make_ca() { # name
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout "$tls/$1.key" -out "$tls/$1.pem" -days 2 -subj "/CN=baton test $1" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}
make_ca ca
make_ca other-ca
openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$tls/server.key" -out "$tls/server.csr" -subj "/CN=localhost" 2>/dev/null
printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$tls/server.ext"
openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
    -CAcreateserial -days 2 -extfile "$tls/server.ext" -out "$tls/server.pem" 2>/dev/null
# The key is readable by redis-server only (it runs as this user).
chmod 600 "$tls"/*.key
start_server "$tls_port" "port 0" "tls-port $tls_port" "tls-cert-file $tls/server.pem" \
    "tls-key-file $tls/server.key" "tls-ca-cert-file $tls/ca.pem" "tls-auth-clients no"
tls_answers() {
    redis-cli --tls --cacert "$tls/ca.pem" -h localhost -p "$tls_port" ping 2>/dev/null |
        grep -q PONG
}
wait_for "the TLS server to answer" tls_answers

echo "== a server with a password on 127.0.0.1:$pw_port"
password="$(openssl rand -hex 16)"
start_server "$pw_port" "requirepass $password"
pw_answers() {
    REDISCLI_AUTH="$password" redis-cli -h 127.0.0.1 -p "$pw_port" ping 2>/dev/null | grep -q PONG
}
wait_for "the password server to answer" pw_answers

export BATON_REDIS_CLUSTER_URL="redis+cluster://$(IFS=,; echo "${seeds[*]}")"
export BATON_REDIS_CLUSTER_PORTS="$(IFS=,; echo "${cluster_ports[*]}")"
# Where each node's redis.conf and redis.pid are (PORT/redis.conf): for the failover test.
export BATON_REDIS_CLUSTER_DIR="$dir"
export BATON_REDIS_TLS_URL="rediss://localhost:$tls_port/0"
export BATON_REDIS_TLS_CA="$tls/ca.pem"
export BATON_REDIS_TLS_WRONG_CA="$tls/other-ca.pem"
export BATON_REDIS_PASSWORD_URL="redis://127.0.0.1:$pw_port/0"
export BATON_REDIS_PASSWORD="$password"
export BATON_REDIS_LAZY_PORT="$lazy_port"
echo "== rig up at $((SECONDS - began)) s"

case "${1:-}" in
bench)
    echo "== bench: embedded store vs Redis, single server and cluster"
    cargo bench --features redis --bench redis
    ;;
run)
    shift
    "$@"
    ;;
*)
    # The shared tests that hold on any Redis, on the cluster. Left out, as they need
    # one server of their own or a raw connection to the one server:
    # redis_never_sees_a_token_or_a_uid (MONITOR and KEYS on one server),
    # the_server_clock_sets_expiry_and_ttls (TIME and KEYS on one server),
    # a_key_of_the_wrong_type_does_not_lock_a_user_out (writes keys by hand),
    # scripts_flushed_from_redis_are_loaded_again, redis_stopped_paused_and_restarted,
    # the_aof_and_slowlog_hold_no_token_and_no_uid and live_counts_exactly_without_a_scan
    # (each on a redis-server of its own; the cluster's own faults and live() are in
    # tests/redis_cluster.rs).
    echo "== shared redis tests on the cluster"
    BATON_REDIS_URL="$BATON_REDIS_CLUSTER_URL" cargo test --release --features redis --test redis -- \
        --exact redis_answers_as_the_model one_rotation_per_batch_across_many_connections \
        two_nodes_share_sessions retired_tokens_are_recognised_as_deep_as_in_memory
    echo "== cluster faults, TLS, passwords, lazy connect (at $((SECONDS - began)) s)"
    # The fault tests serialize themselves and skip without this rig.
    cargo test --release --features redis --test redis_cluster -- --test-threads 1
    echo "== demo servers on the cluster (at $((SECONDS - began)) s)"
    cargo test --release -p baton-demo --test redis_cluster
    ;;
esac
