#!/usr/bin/env bash
# End to end on the local Lambda runtime: `cargo lambda watch --only-lambda-apis` emulates the
# Lambda APIs (runtime and Invoke) and the functions' debug binaries, built once by
# scripts/test.sh with the rest of the workspace, poll it as Lambda instances would (no second
# build with other features). Against a moto server, `cargo lambda invoke` sends (a) an
# EventBridge Scheduler input (SAM ScheduleV2) and (b) a classic EventBridge envelope (SAM
# Schedule) to functions/export. RUN_BUDGET=0s forces every invocation to stop after one unit of
# work, so each bundle takes several hops; the function continues itself through the Lambda
# Invoke API, which the emulator serves too. Each bundle must carry the same content as a CLI
# export of the same data.
# Then the import function (functions/import): bundle 2 is uploaded to its import bucket first
# (it must wait), then bundle 1; an S3 "Object Created" EventBridge event starts the import,
# which continues itself volume by volume and replays both bundles in order; the destination
# must equal the source.
# Every bundle is sealed with age: the export function gets the recipient (AGE_RECIPIENTS), the
# import function reads the identity from a Secrets Manager secret (AGE_IDENTITY_SECRET).
# The emulator answers even InvocationType=Event synchronously, so locally each hop waits for
# the next one: INSTANCES processes of each function give the chain of hops enough instances.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
export PATH="$PWD/.venv/bin:$PATH" CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
py() { env -u AWS_CA_BUNDLE .venv/bin/python "$@"; }
free_port() { py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
instances=${INSTANCES:-40}
bin="$CARGO_TARGET_DIR/debug"
if [ -z "${FERRY_PREBUILT:-}" ]; then
  # Run alone: build what it runs (scripts/test.sh has built it already and sets FERRY_PREBUILT).
  cargo build --quiet --workspace --bins
fi
for b in ferry ferry-export ferry-import; do
  [ -x "$bin/$b" ] || { echo "missing $bin/$b: build the workspace first (cargo build --workspace --bins)" >&2; exit 1; }
done
moto_port=$(free_port); lambda_port=$(free_port); import_port=$lambda_port
logs=$(mktemp -d)
env -u AWS_CA_BUNDLE .venv/bin/moto_server -H 127.0.0.1 -p "$moto_port" >"$logs/moto.log" 2>&1 &
pids=($!)
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
export AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port" AWS_ACCESS_KEY_ID=e2e AWS_SECRET_ACCESS_KEY=e2e \
  AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true FERRY_S3_PATH_STYLE=true
for _ in $(seq 100); do curl -fs "$AWS_ENDPOINT_URL/moto-api/" >/dev/null 2>&1 && break; sleep 0.1; done

py scripts/demo-bucket.py seed e2e-source 20 >/dev/null
py -c 'import boto3; boto3.client("s3").create_bucket(Bucket="e2e-export")'
"$bin/ferry" init --table e2e-state >/dev/null
age-keygen -o "$logs/age.key" 2>/dev/null
recipient=$(age-keygen -y "$logs/age.key")
export AGE_IDENTITY_FILE="$logs/age.key" # for scripts/bundle-content.py

cat >"$logs/function.env" <<ENV
FERRY_JOB=lambda
SOURCE_BUCKET=e2e-source
EXPORT_BUCKET=e2e-export
EXPORT_PREFIX=bundles
STATE_TABLE=e2e-state
AGE_RECIPIENTS=$recipient
VOLUME_SIZE=8MiB
PART_SIZE=5MiB
RUN_BUDGET=0s
MAX_HOPS=60
AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL
AWS_ENDPOINT_URL_LAMBDA=http://127.0.0.1:$lambda_port
AWS_ACCESS_KEY_ID=e2e
AWS_SECRET_ACCESS_KEY=e2e
AWS_REGION=us-east-1
AWS_EC2_METADATA_DISABLED=true
FERRY_S3_PATH_STYLE=true
ENV
say "cargo lambda watch --only-lambda-apis on 127.0.0.1:$lambda_port, $instances instances of each function"
cargo lambda watch --only-lambda-apis --invoke-address 127.0.0.1 --invoke-port "$lambda_port" >"$logs/watch-api.log" 2>&1 &
pids+=($!)
until (exec 3<>"/dev/tcp/127.0.0.1/$lambda_port") 2>/dev/null; do sleep 0.1; done
instances() { # FUNCTION ENV_FILE LOG [COUNT [PORT]]: start the function's instances, polling the emulator
  local i
  for i in $(seq "${4:-$instances}"); do
    (set -a; . "$2"; set +a
     export AWS_LAMBDA_RUNTIME_API="http://127.0.0.1:${5:-$lambda_port}/.rt/$1" AWS_LAMBDA_FUNCTION_NAME="$1" \
       AWS_LAMBDA_FUNCTION_VERSION=1 AWS_LAMBDA_FUNCTION_MEMORY_SIZE=1024
     exec "$bin/$1") >>"$3" 2>&1 &
    pids+=($!)
  done
}
instances ferry-export "$logs/function.env" "$logs/watch.log"

status() { "$bin/ferry" status --job lambda --table e2e-state --json | py -c 'import json,sys; print(json.load(sys.stdin)["sequence"])'; }
wait_for() {
  for _ in $(seq 600); do [ "$(status)" = "$1" ] && return 0; sleep 0.5; done
  echo "bundle $1 was not committed; function log:" >&2; tail -50 "$logs/watch.log" >&2; exit 1
}
invoke() {
  cargo lambda invoke ferry-export --invoke-address 127.0.0.1 --invoke-port "$lambda_port" --data-ascii "$1" \
    | tee -a "$logs/invoke.log"; echo
}
compare() { # SEQUENCE
  py scripts/bundle-content.py e2e-export bundles/lambda "$1" >"$logs/lambda-$1.json"
  py scripts/bundle-content.py e2e-export bundles/cli "$1" >"$logs/cli-$1.json"
  if ! cmp -s "$logs/lambda-$1.json" "$logs/cli-$1.json"; then
    echo "bundle $1 differs between the Lambda and the CLI" >&2; diff <(py -m json.tool "$logs/lambda-$1.json") <(py -m json.tool "$logs/cli-$1.json") >&2; exit 1
  fi
  py -c 'import json,sys; c=json.load(open(sys.argv[1])); print("bundle %d: %d objects, %d deleted, %d moved: identical to the CLI export" % (c["sequence"], len(c["objects"]), len(c["deleted"]), len(c["moved"])))' "$logs/lambda-$1.json"
}
volumes() { py -c 'import boto3,sys; r=boto3.client("s3").list_objects_v2(Bucket="e2e-export", Prefix=f"bundles/lambda/{int(sys.argv[1]):08d}/"); print(sum(o["Key"].endswith(".zip.age") for o in r.get("Contents", [])))' "$1"; }

say "(a) EventBridge Scheduler input"
invoke '{"trigger": "schedule"}'
wait_for 1
"$bin/ferry" export --job cli --source s3://e2e-source --dest s3://e2e-export/bundles --table e2e-state --volume-size 8MiB --encrypt-to "$recipient" >/dev/null
compare 1
echo "bundle 1 took $(grep -c 'continuing the bundle' "$logs/watch.log") continuation hops, $(volumes 1) volumes"

say "(b) classic EventBridge envelope, after changes"
py scripts/demo-bucket.py mutate e2e-source
hops_before=$(grep -c 'continuing the bundle' "$logs/watch.log")
invoke '{"version":"0","id":"e2e","detail-type":"Scheduled Event","source":"aws.events","account":"123456789012","time":"2026-11-01T03:00:00Z","region":"us-east-1","resources":[],"detail":{}}'
wait_for 2
"$bin/ferry" export --job cli --source s3://e2e-source --dest s3://e2e-export/bundles --table e2e-state --volume-size 8MiB --encrypt-to "$recipient" >/dev/null
compare 2
hops=$(( $(grep -c 'continuing the bundle' "$logs/watch.log") - hops_before ))
echo "bundle 2 took $hops continuation hops, $(volumes 2) volumes"
[ "$hops" -ge 2 ] || { echo "expected at least two hops" >&2; exit 1; }

say "unknown fields are refused"
if out=$(cargo lambda invoke ferry-export --invoke-address 127.0.0.1 --invoke-port "$lambda_port" --data-ascii '{"fulll": true}' 2>&1); then
  echo "an event with an unknown field was accepted: $out" >&2; exit 1
fi
grep -q 'fulll' <<<"$out" || { echo "the error does not name the field: $out" >&2; exit 1; }
echo "refused: $(grep -o 'unknown field[^(]*' <<<"$out" | head -1)"
say "import function: bundles uploaded to an import bucket, replayed in order"
py -c 'import boto3; s3=boto3.client("s3"); [s3.create_bucket(Bucket=b) for b in ("e2e-import", "e2e-dest")]'
secret=$(py -c 'import boto3,sys; print(boto3.client("secretsmanager", region_name="us-east-1").create_secret(Name="ferry-age-identity", SecretString=open(sys.argv[1]).read())["ARN"])' "$logs/age.key")
cat >"$logs/import.env" <<ENV
FERRY_JOB=lambda
IMPORT_BUCKET=e2e-import
AGE_IDENTITY_SECRET=$secret
DEST_BUCKET=e2e-dest
STATE_TABLE=e2e-state
RUN_BUDGET=0s
MAX_HOPS=60
AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL
AWS_ENDPOINT_URL_LAMBDA=http://127.0.0.1:$import_port
AWS_ACCESS_KEY_ID=e2e
AWS_SECRET_ACCESS_KEY=e2e
AWS_REGION=us-east-1
AWS_EC2_METADATA_DISABLED=true
FERRY_S3_PATH_STYLE=true
ENV
instances ferry-import "$logs/import.env" "$logs/import-watch.log"
carry="$logs/carry"
"$bin/ferry" download --from s3://e2e-export/bundles --job lambda --since 0 --to "$carry"
"$bin/ferry" verify "$carry/lambda" # no identity: SHA256SUMS of the sealed volumes only
upload() { # SEQUENCE [JOB BUCKET]: the bundle folder, as an operator would upload it
  local job=${2:-lambda}
  py - "$carry/$job/$(printf %08d "$1")" "$job/$(printf %08d "$1")" "${3:-e2e-import}" <<'PY'
import boto3, os, sys
s3 = boto3.client("s3")
names = sorted(os.listdir(sys.argv[1]), key=lambda n: n == "SHA256SUMS")  # SHA256SUMS last
for n in names:
    s3.upload_file(os.path.join(sys.argv[1], n), sys.argv[3], f"{sys.argv[2]}/{n}")
PY
}
import_invoke() {
  cargo lambda invoke ferry-import --invoke-address 127.0.0.1 --invoke-port "$import_port" --data-ascii "$1" \
    | tee -a "$logs/import-invoke.log"; echo
}
imported() { # [JOB]
  py -c 'import boto3,json,sys; i=boto3.client("dynamodb", region_name="us-east-1").get_item(TableName="e2e-state", Key={"job": {"S": "import/" + sys.argv[1]}}, ConsistentRead=True).get("Item"); print(json.loads(i["doc"]["S"])["sequence"] if i and "doc" in i else 0)' "${1:-lambda}"
}
upload 2
out=$(import_invoke '{"trigger": "sweep"}')
grep -q '"applied":\[\]' <<<"$out" || { echo "bundle 2 alone must wait for bundle 1: $out" >&2; exit 1; }
echo "bundle 2 alone: nothing applied ($(imported) applied so far), waiting for bundle 1"
upload 1
import_invoke '{"version":"0","id":"e2e","detail-type":"Object Created","source":"aws.s3","account":"123456789012","time":"2026-11-25T00:00:00Z","region":"us-east-1","resources":["arn:aws:s3:::e2e-import"],"detail":{"bucket":{"name":"e2e-import"},"object":{"key":"lambda/00000001/SHA256SUMS","size":1}}}' >/dev/null
for _ in $(seq 600); do [ "$(imported)" = 2 ] && break; sleep 0.5; done
[ "$(imported)" = 2 ] || { echo "the import did not reach bundle 2; log:" >&2; tail -40 "$logs/import-watch.log" >&2; exit 1; }
echo "import took $(grep -c 'continuing the import' "$logs/import-watch.log") continuation hops"
py scripts/compare-buckets.py e2e-source e2e-dest

# A long tail: TAIL_OBJECTS tiny objects, then all but TAIL_KEEP of them deleted and TAIL_MOVES
# of those renamed. The import function applies the second bundle's deletions (4,000 per
# step) and moves (1,000 per step) over several hops, one step per hop (RUN_BUDGET=0s),
# saving its progress in the table between hops.
tail_objects=${TAIL_OBJECTS:-5000} tail_keep=${TAIL_KEEP:-200} tail_moves=${TAIL_MOVES:-300}
say "import function: a bundle of $((tail_objects - tail_keep - tail_moves)) deletions and $tail_moves moves, in hops"
t0=$SECONDS
py scripts/demo-bucket.py many e2e-tail-src "$tail_objects"
py -c 'import boto3; s3=boto3.client("s3"); [s3.create_bucket(Bucket=b) for b in ("e2e-tail-import", "e2e-tail-dest")]'
tail_export() {
  "$bin/ferry" export --job tail --source s3://e2e-tail-src --dest s3://e2e-export/bundles --table e2e-state \
    --encrypt-to "$recipient" --json | py -c 'import json,sys; r=json.load(sys.stdin); print("exported bundle %s: %s objects, %s deleted, %s moved" % (r.get("sequence"), r.get("objects"), r.get("deleted"), r.get("moved")))'
}
tail_export
py scripts/demo-bucket.py thin e2e-tail-src "$tail_keep" "$tail_moves"
tail_export
"$bin/ferry" download --from s3://e2e-export/bundles --job tail --since 0 --to "$carry" >/dev/null
# The same function with another configuration: a second emulator, so it keeps its name.
tail_port=$(free_port)
cargo lambda watch --only-lambda-apis --invoke-address 127.0.0.1 --invoke-port "$tail_port" >"$logs/watch-tail-api.log" 2>&1 &
pids+=($!)
until (exec 3<>"/dev/tcp/127.0.0.1/$tail_port") 2>/dev/null; do sleep 0.1; done
sed -e 's/^FERRY_JOB=.*/FERRY_JOB=tail/' -e 's/^IMPORT_BUCKET=.*/IMPORT_BUCKET=e2e-tail-import/' \
  -e 's/^DEST_BUCKET=.*/DEST_BUCKET=e2e-tail-dest/' -e 's/^MAX_HOPS=.*/MAX_HOPS=200/' \
  -e "s|^AWS_ENDPOINT_URL_LAMBDA=.*|AWS_ENDPOINT_URL_LAMBDA=http://127.0.0.1:$tail_port|" \
  "$logs/import.env" >"$logs/tail.env"
instances ferry-import "$logs/tail.env" "$logs/tail-watch.log" "${TAIL_INSTANCES:-16}" "$tail_port"
upload 1 tail e2e-tail-import
upload 2 tail e2e-tail-import
echo "set up in $((SECONDS - t0)) s"; t0=$SECONDS
cargo lambda invoke ferry-import --invoke-address 127.0.0.1 --invoke-port "$tail_port" \
  --data-ascii '{"trigger": "sweep"}' >"$logs/tail-invoke.log"
for _ in $(seq 1200); do [ "$(imported tail)" = 2 ] && break; sleep 0.5; done
[ "$(imported tail)" = 2 ] || { echo "the tail import did not reach bundle 2; log:" >&2; tail -40 "$logs/tail-watch.log" >&2; exit 1; }
echo "imported in $((SECONDS - t0)) s: $(grep -c 'import invoked' "$logs/tail-watch.log") invocations, $(grep -c 'deadline: stopping between deletions' "$logs/tail-watch.log") stops between deletions, $(grep -c 'deadline: stopping between moves' "$logs/tail-watch.log") between moves"
py scripts/compare-buckets.py e2e-tail-src e2e-tail-dest
say "lambda end-to-end passed"
