#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 30), starting from its committed seeds
# (fuzz/seeds/TARGET; what it finds goes to fuzz/corpus/TARGET, not committed). Stops at the
# first failure; libFuzzer writes the input to fuzz/artifacts/TARGET/ and prints how to
# replay it. Needs cargo-fuzz (`cargo install cargo-fuzz`).
#   fuzz/run.sh [SECONDS] [TARGET...]
#   fuzz/run.sh --build     builds the targets only
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-30}"
shift || true
# cargo fuzz passes libFuzzer's instrumentation flags, some of them -Z flags; this machine
# has stable Rust only, which takes them with RUSTC_BOOTSTRAP=1.
export RUSTC_BOOTSTRAP=1
# Its own build directory: the instrumented build shares nothing with the workspace's, and a
# `cargo test` that runs this script holds the workspace's lock.
export CARGO_TARGET_DIR="${KOBAN_FUZZ_TARGET_DIR:-$PWD/target}"
# No sanitizer: the targets are safe Rust, and overflow checks stay on (debug assertions).
options=(--sanitizer none --debug-assertions)
targets=("$@")
if [ "${#targets[@]}" -eq 0 ] && [ "$seconds" != "--build" ]; then
    list=$(cargo fuzz list)
    mapfile -t targets <<<"$list"
    [ -n "$list" ] || { echo "no fuzz targets" >&2; exit 1; }
fi
cargo fuzz build "${options[@]}"
if [ "$seconds" = "--build" ]; then
    exit 0
fi
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "seeds/$target"
    echo "== fuzzing $target for ${seconds}s"
    cargo fuzz run "${options[@]}" "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1
done
