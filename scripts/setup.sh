#!/usr/bin/env bash
# Installs what the scripts and tests need and is missing: the project venv (.venv) with the
# pinned Python tools (infra/requirements.txt: moto, cfn-lint, SAM CLI, cargo-lambda, Zig), the
# Rust target of the arm64 Lambda functions, and the zip readers the tests check archives with
# (Debian packages) clamav, the scanner, and Chromium, the browser the review report is checked in. Safe to run again; does nothing when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

# Bold only on a terminal (a CI log shows the text, not escape codes).
if [ -t 2 ]; then say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }; else say() { printf '==> %s\n' "$*" >&2; }; fi

# Debian packages: zip readers of the reader matrix, and Java for java.util.zip.
missing=()
command -v unzip >/dev/null || missing+=(unzip)
command -v 7z >/dev/null || missing+=(p7zip-full)
command -v age >/dev/null || missing+=(age)
command -v bsdtar >/dev/null || missing+=(libarchive-tools)
command -v java >/dev/null && command -v javac >/dev/null || missing+=(default-jdk-headless)
command -v curl >/dev/null || missing+=(curl)
command -v file >/dev/null || missing+=(file)
# The scanner the import's --scan is tested with (offline, with a signature database of its own).
command -v clamscan >/dev/null && command -v sigtool >/dev/null || missing+=(clamav)
# Headless Chromium renders the review report's HTML in the tests (and its screenshot in docs/).
command -v chromium >/dev/null || missing+=(chromium)
[ -x /usr/bin/time ] || missing+=(time)
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The project venv with pinned tools (moto server, ...). Re-synced when requirements change.
stamp=.venv/.requirements.sha256
want=$(sha256sum infra/requirements.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing Python tools into .venv (infra/requirements.txt)"
  python3 -m venv .venv
  # --no-compile: bytecode only for the modules really imported (on first import), not for all
  # of moto's and botocore's thousands.
  env -u AWS_CA_BUNDLE .venv/bin/pip install -q --disable-pip-version-check --no-compile -r infra/requirements.txt
  echo "$want" > "$stamp"
fi

# `sam build` cross-compiles the Lambda functions for arm64 (Zig links them).
if ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
  say "adding the Rust target aarch64-unknown-linux-gnu (the Lambda functions run on arm64)"
  rustup target add aarch64-unknown-linux-gnu
fi

# npm tools pinned in infra/package.json (asl-validator checks statemachine/*.asl.json).
command -v npm >/dev/null || {
  say "installing nodejs and npm"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
}
npm_stamp=.tools/npm/.lock.sha256
npm_want=$(cat infra/package.json infra/package-lock.json | sha256sum | cut -d' ' -f1)
if [ ! -x .tools/npm/node_modules/.bin/asl-validator ] || [ "$(cat "$npm_stamp" 2>/dev/null)" != "$npm_want" ]; then
  say "installing npm tools into .tools/npm (infra/package.json)"
  mkdir -p .tools/npm
  cp infra/package.json infra/package-lock.json .tools/npm/
  (cd .tools/npm && env -u AWS_CA_BUNDLE npm ci --silent --no-audit --no-fund)
  echo "$npm_want" > "$npm_stamp"
fi
