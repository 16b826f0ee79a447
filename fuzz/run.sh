#!/usr/bin/env bash
# Runs one fuzz target for SECONDS (default 600) from its seeds, with libFuzzer's final figures
# at the end: `fuzz/run.sh zip 600`. Needs cargo-fuzz (`cargo install cargo-fuzz`); a stable
# toolchain lets the nightly flags through with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
target="${1:?usage: fuzz/run.sh TARGET [SECONDS]}"
seconds="${2:-600}"
mkdir -p "corpus/$target"
extra=()
case "$target" in
    parse) extra=(../testdata/buildspecs/valid ../testdata/buildspecs/invalid -dict=buildspec.dict -max_len=8192) ;;
    zip | layer | cache_archive) extra=(-max_len=65536) ;;
    *) extra=(-max_len=8192) ;;
esac
dirs=() flags=()
for e in "${extra[@]}"; do
    case "$e" in -*) flags+=("$e") ;; *) dirs+=("$e") ;; esac
done
# -s none: no sanitizer (safe Rust; more executions). -a: debug assertions and overflow checks.
# -rss_limit_mb: the zip and tar readers may allocate what a header claims; 2 GiB is the cap.
RUSTC_BOOTSTRAP=1 cargo fuzz run -s none -a "$target" "corpus/$target" "seeds/$target" "${dirs[@]}" -- \
    "${flags[@]}" -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1
