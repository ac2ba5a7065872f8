#!/usr/bin/env bash
# The benchmark: s3-ferry against the tools people use today (the seed workflow with aws-cli,
# rclone, s5cmd, a boto3 + zipfile script) and against the server's own cost, on local S3
# servers started by scripts/bench.py: s3mem (scripts/s3mem, in memory, Rust; the headline rows
# NAME@s3mem), moto (plain NAME) and s3s-fs (NAME@s3s-fs), the last two kept to show what they
# measure. Self-installing: Debian's rclone and zip, the pinned Python tools in .venv-bench
# (infra/bench-requirements.txt), s3s-fs from crates.io into .tools, release builds of s3mem
# (into target/tools) and ferry.
# Writes docs/bench/results.md, results.json and chart.png.
#   REPS=3 scripts/bench.sh            # repetitions per tool (the seed workflow runs once)
#   DATASETS=small@s3mem,large scripts/bench.sh     # NAME or NAME@SERVER (s3mem, moto, s3s-fs)
#   TOOLS=ferry,boto3+zipfile scripts/bench.sh      # a quick look at some tools only
#   OUT=/tmp/b scripts/bench.sh                     # results elsewhere than docs/bench
set -euo pipefail
cd "$(dirname "$0")/.."
# Bold only on a terminal (a CI log shows the text, not escape codes).
if [ -t 2 ]; then say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }; else say() { printf '==> %s\n' "$*" >&2; }; fi

missing=()
command -v rclone >/dev/null || missing+=(rclone=1.60.1+dfsg-2+b5)
command -v zip >/dev/null || missing+=(zip)
command -v age-keygen >/dev/null || missing+=(age)
[ -x /usr/bin/time ] || missing+=(time)
command -v clamscan >/dev/null && command -v sigtool >/dev/null || missing+=(clamav)
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
stamp=.venv-bench/.requirements.sha256
want=$(sha256sum infra/bench-requirements.txt | cut -d' ' -f1)
if [ ! -x .venv-bench/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing the benchmark's Python tools into .venv-bench"
  python3 -m venv .venv-bench
  env -u AWS_CA_BUNDLE .venv-bench/bin/pip install -q --disable-pip-version-check -r infra/bench-requirements.txt
  echo "$want" > "$stamp"
fi
S3S_FS_VERSION=0.14.1  # 0.17 needs rustc 1.96
if [ "$(.tools/bin/s3s-fs --version 2>/dev/null)" != "s3s-fs $S3S_FS_VERSION" ]; then
  say "installing s3s-fs $S3S_FS_VERSION into .tools (about 3 minutes)"
  CARGO_TARGET_DIR=target/tools cargo install --quiet --locked --features binary --root .tools \
    "s3s-fs@$S3S_FS_VERSION"
fi
say "release build of s3mem, the benchmark's S3 server (scripts/s3mem)"
cargo build --release --quiet --locked --manifest-path scripts/s3mem/Cargo.toml --target-dir target/tools
say "release build of ferry"
cargo build --release --quiet --bin ferry
say "running the benchmark (docs/bench/)"
exec env -u AWS_CA_BUNDLE .venv-bench/bin/python scripts/bench.py --reps "${REPS:-3}" \
  --datasets "${DATASETS:-small@s3mem,small10x@s3mem,large@s3mem,mixed@s3mem,small,large@s3s-fs}" --tools "${TOOLS:-}" --out "${OUT:-docs/bench}"
