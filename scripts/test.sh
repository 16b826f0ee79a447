#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs and starts what the tests need (idempotent, quick
# when everything is already there), then checks formatting, lints with warnings denied, and runs
# every test. A test that needs a missing service fails loudly; nothing is skipped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Outside the clone, so a fresh clone on the same machine reuses compiled dependencies.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/buildagent-target}"
export RUSTFLAGS="-D warnings"
export RUSTDOCFLAGS="-D warnings"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n== %s\n' "$*"; }

step "toolchain"
command -v cargo >/dev/null || { echo "cargo is missing: install Rust with rustup" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
cargo --version

step "shared corpus"
# The real-world buildspecs the parser is tested against live beside the repository.
[ -f ../shared/corpus/INDEX.tsv ] || { echo "../shared/corpus is missing: the corpus tests need it" >&2; exit 1; }

step "services"
# moto, a Docker engine, two registries, the local base image, skopeo and umoci, all on
# 127.0.0.1 (scripts/services.sh; quick when they already run). Exports BUILDAGENT_TEST_*.
source scripts/services.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo clippy, the runner without its default features"
# An embedder's lean build (no AWS SDK, bollard or reqwest) stays warning-free too.
cargo clippy -p buildagent-runner --no-default-features --all-targets --locked -- -D warnings

step "cargo doc"
# Broken or private intra-doc links and bad HTML in docs fail here (RUSTDOCFLAGS denies warnings).
cargo doc --workspace --no-deps --locked

step "cargo package"
# The three published crates package (metadata, readme, versioned path dependencies); offline,
# without building the packages again.
cargo package --workspace --exclude buildagent-tests --no-verify --offline --allow-dirty --locked

step "cargo build"
# The end-to-end tests run the real binary.
cargo build --workspace --locked

step "cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log" || status=$?
# The lean runner runs a host build, and says so when a build needs what it left out.
cargo test -p buildagent-runner --no-default-features --locked --no-fail-fast \
    --test features --example embed 2>&1 | tee -a "$log" || status=$?

# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\ntests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
