#!/usr/bin/env bash
# `sam build` of both templates, exactly as README's deploy steps run it, then a check that every
# built `bootstrap` is an aarch64 executable. SAM_QUICK=1 (scripts/test.sh) swaps the release
# profile for a cheaper one through cargo's CARGO_PROFILE_RELEASE_* variables (no LTO, parallel
# codegen, opt-level 0: 452 CPU s instead of 1,062 at opt-level 1, measured on 2 cores):
# the same build path, a faster compile. The export template builds into
# .aws-sam/build (README's `sam deploy` takes it from there), the far side's into .aws-sam/import.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" SAM_CLI_TELEMETRY=0
if [ "${SAM_QUICK:-1}" = 1 ]; then
  export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_OPT_LEVEL=0
  echo "release profile for a quick check: no LTO, 16 codegen units, opt-level 0"
fi
start=$(date +%s)
env -u AWS_CA_BUNDLE sam build --template template.yaml
env -u AWS_CA_BUNDLE sam build --template infra/import.yaml --build-dir .aws-sam/import
for f in .aws-sam/build/*/bootstrap .aws-sam/import/*/bootstrap; do
  kind=$(file -b "$f")
  echo "bootstrap $f: $kind"
  [[ $kind == *"ELF 64-bit"* && $kind == *executable* && $kind == *aarch64* ]] \
    || { echo "$f is not an aarch64 executable" >&2; exit 1; }
done
echo "built both templates in $(( $(date +%s) - start ))s"
