#!/usr/bin/env bash
# Where ferry's CPU goes during a benchmark export: builds ferry with symbols (target/prof),
# runs one benchmark dataset with `perf record` around the measured export and prints the
# hottest functions. Needs scripts/bench.sh to have run once (it installs the tools).
#   scripts/profile.sh                 # the large dataset on s3s-fs
#   DATASET=small scripts/profile.sh   # any dataset bench.py knows
# perf samples with the cpu-clock software event: virtual machines often have no hardware
# counters. For instruction counts that repeat exactly, run ferry under
# `valgrind --tool=callgrind` the same way (slow: about 50× the run time).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "perf is missing: apt-get install linux-perf" >&2; exit 1; }
[ -x .venv-bench/bin/python ] || { echo "run scripts/bench.sh once first (it installs the tools)" >&2; exit 1; }
export CARGO_TARGET_DIR=$PWD/target/prof
CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
  cargo build --release --quiet --bin ferry
out=$PWD/target/prof/perf.data
wrapper=$(mktemp)
trap 'rm -f "$wrapper"' EXIT
cat > "$wrapper" <<EOF
#!/usr/bin/env bash
# Only the measured run (it asks for --json) is recorded.
if [[ " \$* " == *" export "* && " \$* " == *" --json"* ]]; then
  exec perf record -q -e cpu-clock -F 4000 -o "$out" -- "$CARGO_TARGET_DIR/release/ferry" "\$@"
fi
exec "$CARGO_TARGET_DIR/release/ferry" "\$@"
EOF
chmod +x "$wrapper"
FERRY_BIN=$wrapper env -u AWS_CA_BUNDLE .venv-bench/bin/python scripts/bench.py --reps 1 \
  --datasets "${DATASET:-large@s3s-fs}" --tools ferry --plan-keys 0 --no-limited \
  --out target/prof/bench >/dev/null
echo "== by binary"
perf report -i "$out" --no-children --sort dso --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -5
echo "== hottest functions"
perf report -i "$out" --no-children --sort dso,sym --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -25
