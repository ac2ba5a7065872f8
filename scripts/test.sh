#!/usr/bin/env bash
# Every check, from a clean clone, on 2 cores (the target is 12 minutes, the limit 20): ONE debug
# build of the whole workspace linted by clippy as it compiles (tests, the CLI and both Lambda
# functions, with one feature set), started first and run beside the setup (scripts/setup.sh
# installs what is missing), formatting, the module graph and the template checks; then the
# documented `sam build` of both templates (arm64, in the background at low priority with a
# cheaper release profile), the unit and integration tests (the fast tier in process on the
# in-memory stores; each moto-tier test process gets a moto server of its own on a free
# 127.0.0.1 port, forked from one zygote that imported moto once, so cargo-nextest runs them in
# parallel), and the Lambda end to end on the local Lambda emulator with the binaries already
# built.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '==> %s\n' "$*" >&2; }
start=$(date +%s)
lap=$start
took() { local now; now=$(date +%s); say "$1 took $((now - lap))s"; lap=$now; }

# The debug build needs only the Rust toolchain: it starts at once and compiles while the
# setup downloads and installs (mostly waiting on the network) and the template checks run.
# `cargo build --all-targets` builds the test binaries and the bins with one feature set (dev
# dependencies included), so nextest and the Lambda end to end reuse it as it is.
# `cargo clippy` is `cargo check` with clippy-driver as the compiler of the workspace's own
# crates (RUSTC_WORKSPACE_WRAPPER; CLIPPY_ARGS is how cargo-clippy hands it `-D warnings`).
# The same driver in the build lints exactly what `cargo clippy --workspace --all-targets --
# -D warnings` lints, and the dependencies are compiled once instead of twice (clippy's own
# pass took 146-170 s). The variables stay set, so that nextest reuses this build.
RUSTC_WORKSPACE_WRAPPER="$(command -v clippy-driver)" \
  || { echo "clippy-driver not found: rustup component add clippy" >&2; exit 1; }
CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
# No incremental caches: a clean build compiles each crate once and writes no query cache.
CARGO_INCREMENTAL=0
export RUSTC_WORKSPACE_WRAPPER CLIPPY_ARGS CARGO_INCREMENTAL
mkdir -p target
say "building the workspace once, linted as it compiles (clippy --all-targets -D warnings; tests, ferry, ferry-export, ferry-import), beside the setup (log: target/build.log)"
cargo build --workspace --all-targets --quiet >target/build.log 2>&1 &
build=$!
trap 'kill $build 2>/dev/null || true' EXIT

scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
# Scripts print ANSI bold only on a terminal: piped (as here, and in CI logs) there is none.
for f in scripts/setup.sh scripts/demo.sh scripts/bench.sh scripts/lambda-e2e.sh; do
  def=$(grep -E '^(if \[ -t [12] \]; then )?say\(\)' "$f")
  out=$(bash -c "$def; say probe" 2>&1 | cat)
  if [[ "$out" == *$'\033'* || "$out" != *"==> probe"* ]]; then
    echo "$f: its say() printed '$out' into a pipe (ANSI escapes belong on a terminal only)" >&2
    exit 1
  fi
done
took "setup"

say "cargo fmt --check"
cargo fmt --all -- --check
# The benchmark's server is its own workspace (built only by scripts/bench.sh): formatting only.
rustfmt --edition 2024 --check scripts/s3mem/src/*.rs

say "module graph: no import cycle (scripts/module-cycles.py)"
python3 scripts/module-cycles.py

say "template checks: cfn-lint, sam validate --lint"
for t in template.yaml infra/import.yaml; do
  env -u AWS_CA_BUNDLE cfn-lint "$t"
  env -u AWS_CA_BUNDLE SAM_CLI_TELEMETRY=0 sam validate --lint --template "$t"
done
say "state machine definitions: asl-validator (DefinitionSubstitutions filled in as CloudFormation would)"
mkdir -p target/asl
for f in statemachine/*.asl.json; do
  sed -e 's/\${ExportFunctionArn}/arn:aws:lambda:us-east-1:123456789012:function:job-export/g' \
    -e 's/\${ShardFunctionArn}/arn:aws:lambda:us-east-1:123456789012:function:job-shard/g' \
    -e 's/\${MaxConcurrency}/8/g' "$f" >"target/asl/$(basename "$f")"
  if grep -n '\${' "target/asl/$(basename "$f")"; then echo "$f: a substitution is not filled in" >&2; exit 1; fi
  .tools/npm/node_modules/.bin/asl-validator --json-path "target/asl/$(basename "$f")"
done
took "template checks"

say "waiting for the debug build"
if ! wait "$build"; then
  cat target/build.log >&2
  echo "the debug build failed (log: target/build.log)" >&2
  exit 1
fi
cat target/build.log >&2
took "debug build with clippy (after the setup)"

say "sam build of both templates (background at low priority, log: target/sam-build.log)"
# niced: the tests and the end to end, which wait on time-outs and leases, come first; the
# arm64 build takes the CPU they leave.
setsid nice -n 10 env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS scripts/sam-build.sh >target/sam-build.log 2>&1 &
sam_build=$!
# A failing step ends the script: the background build goes with it.
trap 'kill -- -$sam_build 2>/dev/null || true' EXIT

say "moto zygote for the tests (each test process forks its own server from it)"
zygote_dir=$(mktemp -d)
exec 8> >(exec env -u AWS_CA_BUNDLE .venv/bin/python scripts/moto-guard.py --zygote "$zygote_dir/moto.sock" >target/moto-zygote.log 2>&1)
for _ in $(seq 300); do [ -S "$zygote_dir/moto.sock" ] && break; sleep 0.1; done
[ -S "$zygote_dir/moto.sock" ] || { cat target/moto-zygote.log >&2; echo "the moto zygote did not start" >&2; exit 1; }
export FERRY_MOTO_ZYGOTE="$zygote_dir/moto.sock"

say "unit and integration tests (moto per test process)"
# Six at once, the slowest first (.config/nextest.toml): tests wait on moto, on leases and on
# time-outs (345 s locally, against 417 s with four in file order).
if command -v cargo-nextest >/dev/null; then
  cargo nextest run --workspace --all-targets --no-fail-fast --test-threads "${TEST_THREADS:-6}"
else
  cargo test --workspace --all-targets
fi
took "tests"
exec 8>&-  # the zygote ends
unset FERRY_MOTO_ZYGOTE

say "Lambda end to end (cargo lambda watch --only-lambda-apis + the debug binaries, against moto)"
FERRY_PREBUILT=1 scripts/lambda-e2e.sh
took "Lambda end to end"

say "waiting for sam build"
if ! wait "$sam_build"; then
  tail -40 target/sam-build.log >&2
  echo "sam build failed (log: target/sam-build.log)" >&2
  exit 1
fi
grep -E '^(built|bootstrap)' target/sam-build.log
took "sam build (after the tests)"

say "all checks passed in $(( $(date +%s) - start ))s"
