#!/usr/bin/env bash
# Peak RSS of `ferry export` (GNU time -v) for many small objects and for one large object, on
# a moto server started here (objects are created in moto's store by scripts/moto-guard.py).
# moto keeps every byte in RAM (source object + parts + completed volume), which bounds the
# large-object size this machine can measure through it.
#   scripts/measure-rss.sh [SMALL_OBJECTS (default 200000)] [LARGE_BYTES (default 3GiB)]
# PROFILE=debug measures the debug build (no release build needed).
set -euo pipefail
cd "$(dirname "$0")/.."
small=${1:-200000}
large=${2:-3221225472}
scripts/setup.sh
profile=${PROFILE:-release}
if [ "$profile" = release ]; then cargo build --quiet --release --bin ferry; else cargo build --quiet --bin ferry; fi
ferry=target/$profile/ferry
py() { env -u AWS_CA_BUNDLE .venv/bin/python "$@"; }
port=$(py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ACCESS_KEY_ID=rss AWS_SECRET_ACCESS_KEY=rss \
  AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true FERRY_S3_PATH_STYLE=true
coproc MOTO { env -u AWS_CA_BUNDLE .venv/bin/python scripts/moto-guard.py "$port"; }
read -r ready <&"${MOTO[0]}"; [ "$ready" = ready ]
guard() { echo "$*" >&"${MOTO[1]}"; read -r ok <&"${MOTO[0]}"; [ "$ok" = ok ] || { echo "moto: $ok" >&2; exit 1; }; }
py -c 'import boto3; s3=boto3.client("s3"); [s3.create_bucket(Bucket=b) for b in ("rss-small", "rss-large", "rss-export")]'
$ferry init --table rss >/dev/null

measure() { # LABEL JOB SOURCE
  local out; out=$(mktemp)
  /usr/bin/time -v $ferry export --job "$2" --source "$3" --dest s3://rss-export/b --table rss --json >"$out.json" 2>"$out"
  printf '%-28s peak RSS %6d MiB  wall %s  objects %s  bytes %s\n' "$1" \
    $(( $(grep 'Maximum resident' "$out" | awk '{print $NF}') / 1024 )) \
    "$(grep 'Elapsed (wall' "$out" | awk '{print $NF}')" \
    "$(py -c 'import json,sys; print(json.load(open(sys.argv[1]))["objects"])' "$out.json")" \
    "$(py -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytes"])' "$out.json")"
}
guard seed-big rss-large big.bin "$large"
measure "one $(( large / 1048576 )) MiB object" large s3://rss-large
guard seed-numbered rss-small "$small"
measure "$small small objects" small s3://rss-small
