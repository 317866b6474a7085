#!/usr/bin/env bash
# Loom: every interleaving of the store's races, in tiny models (tests/loom.rs), each
# with a twin that injects a deliberate bug and must fail. Run from anywhere.
#
#   bash .ci/loom.sh               all models
#   bash .ci/loom.sh model_1       the models whose names match
#
# Loom and crossbeam-epoch's loom build change every atomic in the graph, so this
# builds into its own target dir rather than thrash the shared one.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
export RUSTFLAGS="--cfg loom --cfg crossbeam_loom"
export CARGO_TARGET_DIR=target/loom
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
# Optimised, but with debug assertions on, so the index's `debug_assert!`s are
# checked in every interleaving.
export CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true
start=$SECONDS
# --nocapture shows each model's execution count and time.
cargo test --release --test loom -- --nocapture --test-threads=2 "$@"
echo "loom: done in $((SECONDS - start)) s (build included)"
