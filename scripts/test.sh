#!/usr/bin/env bash
# Every check: installs what is missing, then formatting, lints, unit and integration tests
# (the integration tests start their own moto server on a free 127.0.0.1 port).
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
start=$(date +%s)

scripts/setup.sh

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

say "cargo test (unit and integration tests against moto)"
cargo test --workspace --all-targets

say "all checks passed in $(( $(date +%s) - start ))s"
