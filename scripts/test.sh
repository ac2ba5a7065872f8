#!/usr/bin/env bash
# Every check: installs what is missing, then formatting, lints, the template checks, unit and
# integration tests (they start their own moto server on a free 127.0.0.1 port), the arm64
# release build of the Lambda (beside the tests), and the Lambda end to end on cargo lambda watch.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
start=$(date +%s)

scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

say "template checks: cfn-lint, sam validate --lint"
for t in template.yaml infra/import.yaml; do
  env -u AWS_CA_BUNDLE cfn-lint "$t"
  env -u AWS_CA_BUNDLE SAM_CLI_TELEMETRY=0 sam validate --lint --template "$t"
done

say "building tests"
cargo test --workspace --all-targets --no-run

say "cargo lambda build --release --arm64 (in the background, log: target/lambda-build.log)"
mkdir -p target
FERRY_FAST_RELEASE=1 scripts/build-lambda.sh >target/lambda-build.log 2>&1 &
lambda_build=$!

say "cargo test (unit and integration tests against moto)"
cargo test --workspace --all-targets

say "Lambda end to end (cargo lambda watch + invoke against moto)"
scripts/lambda-e2e.sh

say "waiting for the Lambda release build"
if ! wait "$lambda_build"; then
  tail -40 target/lambda-build.log >&2
  echo "the Lambda release build failed" >&2
  exit 1
fi
grep '^built ' target/lambda-build.log

say "all checks passed in $(( $(date +%s) - start ))s"
