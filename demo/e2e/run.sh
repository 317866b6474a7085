#!/usr/bin/env bash
# End-to-end: drives baton-demo with an unmodified third-party devise_token_auth
# client from npm (devise-token-auth-client) in Node. Installs the client from the
# lockfile, starts the server on a free loopback port, runs the tests, and stops
# the server it started. Exits non-zero if anything fails.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$here"

npm ci --no-audit --no-fund --loglevel=error

cd "$root"
cargo build --release -p baton-demo --bin baton-demo
target_dir="$(cargo metadata --format-version 1 --no-deps | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')"
bin="$target_dir/release/baton-demo"

# A free port: ask the kernel for one, then hand it to the server.
port="$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
log="$(mktemp)"
"$bin" --listen "127.0.0.1:$port" --metrics-listen 127.0.0.1:0 --user 'e2e@example.com:e2e-password' >"$log" 2>&1 &
server=$!
stop() {
  kill -TERM "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -f "$log"
}
trap stop EXIT

# Wait (bounded) for the server to say it is listening.
for _ in $(seq 1 100); do
  grep -q "listening" "$log" && break
  kill -0 "$server" 2>/dev/null || { cat "$log"; echo "baton-demo exited early" >&2; exit 1; }
  sleep 0.1
done
grep -q "listening" "$log" || { cat "$log"; echo "baton-demo did not start" >&2; exit 1; }

cd "$here"
BATON_URL="http://127.0.0.1:$port" node --test client.test.js
