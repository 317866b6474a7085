#!/usr/bin/env bash
# CI: every fuzz target for a bounded time (FUZZ_SECONDS, default 60 each), starting
# from its committed seed corpus. A crash fails the run and prints the crashing input
# (hex, base64 and the target's own Debug view) together with the fuzzer's output, so
# the log alone is enough to reproduce it. Run from anywhere; FUZZ_TARGETS="codec"
# runs a subset.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export CARGO_TERM_COLOR=never

seconds="${FUZZ_SECONDS:-60}"
# Extra libFuzzer flags, e.g. FUZZ_ARGS="-jobs=2 -workers=2".
read -r -a extra <<<"${FUZZ_ARGS:-}"
read -r -a targets <<<"${FUZZ_TARGETS:-differential codec credentials persist_load}"

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: the nightly toolchain is required (cargo-fuzz builds with -Zsanitizer)" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

echo "== fuzz: building ${targets[*]}"
cargo +nightly fuzz build

# New corpus entries and artifacts go to scratch space: the committed corpus stays
# small, and only this run's crashes are reported.
# Known leaks outside baton's code, each explained in the file.
export LSAN_OPTIONS="suppressions=$PWD/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

failed=()
for t in "${targets[@]}"; do
    echo "== fuzz: $t for ${seconds} s"
    mkdir -p "$scratch/corpus/$t" "$scratch/artifacts/$t"
    log="$scratch/$t.log"
    per_input_leaks=1
    case "$t" in
    # These build a store per input, and its epoch collector frees retired sessions
    # only after the input has ended, so a per-input leak check would scan after every
    # input (20-40x slower). LeakSanitizer still checks once at exit: a session that
    # is never freed piles up over the run and is reported there, with its stack.
    differential | codec | persist_load) per_input_leaks=0 ;;
    esac
    if cargo +nightly fuzz run "$t" "$scratch/corpus/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=30 -print_final_stats=1 \
        -detect_leaks="$per_input_leaks" -artifact_prefix="$scratch/artifacts/$t/" \
        "${extra[@]}" >"$log" 2>&1; then
        grep -E '^#[0-9]+[[:space:]]+DONE|^stat::(number_of_executed_units|average_exec_per_sec)' "$log" || true
        continue
    fi
    failed+=("$t")
    echo "!! fuzz: $t failed; the fuzzer's output (progress lines left out):"
    grep -vE '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|RELOAD)' "$log" || true
    for a in "$scratch"/artifacts/"$t"/*; do
        [ -f "$a" ] || continue
        echo "!! crashing input $(basename "$a") ($(wc -c <"$a") bytes)"
        echo "-- base64 (decode with: base64 -d > input):"
        base64 -w 76 "$a"
        echo "-- hex:"
        od -A x -t x1z -v "$a"
        echo "-- as the target reads it:"
        cargo +nightly fuzz fmt "$t" "$a" 2>&1 || true
    done
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]} (see fuzz/README.md to reproduce and minimise)" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${seconds} s each, no crash"
