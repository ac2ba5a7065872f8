#!/usr/bin/env bash
# Release build of the Lambda functions (export and import) for arm64 with cargo-lambda (Zig as the cross linker),
# as `sam build` does. Prints the build time and the bootstrap size. If this machine cannot get
# the aarch64 Rust target, builds x86_64 instead and says why.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
# Own target dir: runs beside `cargo test` without waiting on its build-directory lock.
export CARGO_TARGET_DIR="$PWD/target/lambda-build"
arch=--arm64
if ! rustup target list --installed 2>/dev/null | grep -q '^aarch64-unknown-linux-gnu$'; then
  if ! rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1; then
    echo "rustup cannot add aarch64-unknown-linux-gnu here: building x86_64 instead (template.yaml deploys arm64)"
    arch=--x86-64
  fi
fi
if [ "${FERRY_FAST_RELEASE:-}" = 1 ]; then
  # scripts/test.sh checks the build with thin LTO and parallel codegen to keep CI short;
  # `sam build` and a plain run of this script use the release profile (fat LTO, 1 codegen unit).
  export CARGO_PROFILE_RELEASE_LTO=thin CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
  echo "release profile overridden for a quick check: thin LTO, 16 codegen units"
fi
start=$(date +%s)
cargo lambda build --release "$arch" -p ferry-export -p ferry-import
for f in "$CARGO_TARGET_DIR"/lambda/*/bootstrap; do
  printf 'built %s (%s) in %ss: %s bytes\n' "$f" "$(file -b "$f" | cut -d, -f1-2)" "$(( $(date +%s) - start ))" "$(stat -c %s "$f")"
done
