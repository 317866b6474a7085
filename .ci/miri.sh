#!/usr/bin/env bash
# Miri over the test that races lookups against removals and table rebuilds: every
# dereference of an epoch-protected pointer is checked for use-after-free and races.
# Tree borrows: crossbeam-epoch's own pointer tagging trips the older stacked-borrows
# model. Leaks are ignored because the epoch collector keeps garbage in statics.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup +nightly component add miri rust-src >/dev/null
MIRIFLAGS="-Zmiri-ignore-leaks -Zmiri-tree-borrows" \
    cargo +nightly miri test --test reclamation
# The ChaCha20 block's one unsafe call (a #[target_feature] function, after run-time
# detection), checked on the instruction sets Miri reports, against rand_chacha; and
# the session pool's slots, free lists and page mappings (Miri's mmap shim).
MIRIFLAGS="-Zmiri-tree-borrows" \
    cargo +nightly miri test --lib -- chacha:: pool::
