#!/usr/bin/env bash
# The demo's page (GET /) in a real browser: Debian's Chromium (installed if missing;
# CHROMIUM names another binary), driven by puppeteer-core, which downloads no browser.
# Installs the npm packages from the lockfile, starts two release servers on free
# loopback ports (each with its metrics listener on another), one with the default flags
# (5 s batch window) and one with --batch-window-ms 1500, runs page.test.js against
# both, and stops them.
# Screenshots land in the target directory: page.png (1280 px) and page-phone.png
# (390 px). Exits non-zero if anything fails.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
chromium="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ] && [ -z "${CHROMIUM:-}" ]; then
  echo "== installing chromium"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi
[ -x "$chromium" ] || { echo "page.sh: no browser at $chromium" >&2; exit 1; }

cd "$here"
npm ci --no-audit --no-fund --loglevel=error

cd "$root"
cargo build --release -p baton-demo --bin baton-demo
target_dir="$(cargo metadata --format-version 1 --no-deps | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')"
bin="$target_dir/release/baton-demo"

free_port() {
  node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

pids=()
logs=()
stop() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -f "${logs[@]}"
}
trap stop EXIT

# Starts a server with the given flags (no --user: the page prefills the demo user) and,
# once it listens, adds "URL WINDOW_MS METRICS_URL" to the list.
start() {
  local window_ms="$1"
  shift
  local port log
  port="$(free_port)"
  log="$(mktemp)"
  logs+=("$log")
  # The counters on a listener of their own, on a port the kernel picks: the page is
  # told its URL and reads it across origins (the listener's CORS allows the API's).
  "$bin" --listen "127.0.0.1:$port" --metrics-listen 127.0.0.1:0 "$@" >"$log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do
    grep -q "^metrics on " "$log" && break
    kill -0 "${pids[-1]}" 2>/dev/null || { cat "$log" >&2; echo "baton-demo exited early" >&2; exit 1; }
    sleep 0.1
  done
  grep -q "^metrics on " "$log" || { cat "$log" >&2; echo "baton-demo did not start" >&2; exit 1; }
  local metrics
  metrics="$(sed -n 's/^metrics on \(http:[^ ]*\)$/\1/p' "$log")"
  [ -n "$metrics" ] || { cat "$log" >&2; echo "baton-demo named no metrics URL" >&2; exit 1; }
  servers+="http://127.0.0.1:$port $window_ms $metrics,"
}

servers=""
start 5000
start 1500 --batch-window-ms 1500

cd "$here"
BATON_PAGE_SERVERS="$servers" BATON_SHOTS="$target_dir" CHROMIUM="$chromium" node --test page.test.js
echo "page.sh: screenshots in $target_dir/page.png and $target_dir/page-phone.png"
