#!/usr/bin/env bash
# The Redis backend's tests against a real redis-server on loopback: installs Debian's
# redis-server if missing, starts a throwaway instance (no persistence), runs
# `cargo test --release --features redis --test redis`, the tower layer's
# (`--features redis,axum --test layer`) and the demo server's
# (`-p baton-demo --test redis --test signin`), and stops the server however the tests end.
# `bash .ci/redis.sh bench` runs the embedded-vs-Redis bench instead.
# Run from anywhere; BATON_REDIS_PORT overrides the port (default 6390).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

port="${BATON_REDIS_PORT:-6390}"
dir="$(mktemp -d)"

if ! command -v redis-server >/dev/null; then
    echo "== installing redis-server"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server
fi

# Another run's server (or anyone's) on the port would be tested against, then shut
# down by `stop`: refuse instead.
if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then
    echo "error: something already answers on 127.0.0.1:$port; set BATON_REDIS_PORT" >&2
    rm -rf "$dir"
    exit 1
fi

stop() {
    # Only the server this run started, by its pid (SIGTERM: redis shuts down, and
    # with --save '' writes nothing).
    if [ -f "$dir/redis.pid" ]; then
        pid="$(cat "$dir/redis.pid")"
        kill "$pid" 2>/dev/null || true
        # Wait (bounded) for the server to go, then make sure it has.
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
}
trap stop EXIT

echo "== redis-server on 127.0.0.1:$port"
redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir" \
    --maxmemory-policy noeviction
for _ in $(seq 100); do
    redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG && break
    sleep 0.1
done
redis-cli -h 127.0.0.1 -p "$port" ping | grep -q PONG

export BATON_REDIS_URL="redis://127.0.0.1:$port/0"
if [ "${1:-}" = bench ]; then
    echo "== bench: embedded store vs Redis"
    cargo bench --features redis --bench redis
else
    echo "== redis tests"
    cargo test --release --features redis --test redis -- --include-ignored
    echo "== the tower layer on redis"
    cargo test --release --features redis,axum --test layer -- --include-ignored
    echo "== demo server on redis"
    cargo test --release -p baton-demo --test redis --test signin
fi
