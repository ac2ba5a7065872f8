#!/usr/bin/env bash
# End to end on the local Lambda runtime and moto's Step Functions interpreter.
# `cargo lambda watch --only-lambda-apis` emulates the Lambda APIs (runtime and Invoke) and the
# functions' debug binaries, built once by scripts/test.sh with the rest of the workspace, poll
# it as Lambda instances would (no second build with other features).
# Export: the real state machine (statemachine/export.asl.json, its DefinitionSubstitutions
# filled in) runs on moto's interpreter (execute_state_machine). The interpreter calls AWS at
# http://localhost:$MOTO_PORT, so moto is started with MOTO_PORT set to scripts/sfn-proxy.py's
# port, which routes the Lambda Invoke API to the emulator and the rest (the Distributed Map's
# ItemReader) to moto. As template.yaml deploys it, the shard step goes to the shard function
# (the same binary with FERRY_STEPS=shard, served by a second emulator the proxy routes
# `ferry-shard` to) and the other steps to the export function, which refuses shard steps.
# The function cuts each bundle into 8 shards (SHARDS=8; the Map runs 4
# at once) and RUN_BUDGET=0s stops every shard step after one object, so each child workflow
# loops shard → shard → … until its shard is done. Started (a) with the EventBridge Scheduler
# input and (b) with a classic EventBridge envelope, each bundle must carry what a one-shard
# CLI export of the same data carries (objects, SHA-256s, deletes, moves); (c) a run whose
# input is refused ends FAILED through the failure step.
# Then the import function (functions/import): bundle 2 is uploaded to its import bucket first
# (it must wait), then bundle 1; an S3 "Object Created" EventBridge event starts the import,
# which continues itself volume by volume and replays both bundles in order; the destination
# must equal the source.
# Every bundle is sealed with age: the export function gets the recipient (AGE_RECIPIENTS), the
# import function reads the identity from a Secrets Manager secret (AGE_IDENTITY_SECRET).
# The emulator answers even InvocationType=Event synchronously, so locally each hop waits for
# the next one: INSTANCES processes of the import function give the chain of hops enough
# instances.
set -euo pipefail
cd "$(dirname "$0")/.."
# Bold only on a terminal (a CI log shows the text, not escape codes).
if [ -t 1 ]; then say() { printf '\033[1m==> %s\033[0m\n' "$*"; }; else say() { printf '==> %s\n' "$*"; }; fi
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
moto_port=$(free_port); proxy_port=$(free_port); lambda_port=$(free_port); import_port=$lambda_port
shard_port=$(free_port)
logs=$(mktemp -d)
pids=()
cleanup() { exec 6>&- 7>&- 2>/dev/null || true; kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
# moto's Step Functions interpreter calls AWS at localhost:$MOTO_PORT: the proxy's port. moto runs
# until its standard input (fd 6) closes, through scripts/moto-guard.py, which serves DynamoDB
# one request at a time as real DynamoDB's atomic item writes would (the shards of one run claim
# volume numbers concurrently).
exec 6> >(exec env -u AWS_CA_BUNDLE MOTO_PORT="$proxy_port" .venv/bin/python scripts/moto-guard.py \
  "$moto_port" >"$logs/moto.log" 2>&1)
# The proxy runs until its standard input (this script's fd 7) closes.
exec 7> >(exec env -u AWS_CA_BUNDLE .venv/bin/python scripts/sfn-proxy.py "$proxy_port" \
  "http://127.0.0.1:$moto_port" "http://127.0.0.1:$lambda_port" \
  "ferry-shard=http://127.0.0.1:$shard_port/ferry-export" >"$logs/proxy.log" 2>&1)
export AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port" AWS_ACCESS_KEY_ID=e2e AWS_SECRET_ACCESS_KEY=e2e \
  AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true FERRY_S3_PATH_STYLE=true
for _ in $(seq 100); do curl -fs "$AWS_ENDPOINT_URL/moto-api/" >/dev/null 2>&1 && break; sleep 0.1; done
until (exec 3<>"/dev/tcp/127.0.0.1/$proxy_port") 2>/dev/null; do sleep 0.1; done
# Before any state machine is created: moto keeps those in another backend otherwise.
curl -fs -X POST "$AWS_ENDPOINT_URL/moto-api/config" -H 'Content-Type: application/json' \
  -d '{"stepfunctions": {"execute_state_machine": true}}' >/dev/null

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
SHARDS=8
RUN_BUDGET=0s
AUDIT_PREFIX=audit/
AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL
AWS_ACCESS_KEY_ID=e2e
AWS_SECRET_ACCESS_KEY=e2e
AWS_REGION=us-east-1
AWS_EC2_METADATA_DISABLED=true
FERRY_S3_PATH_STYLE=true
ENV
say "cargo lambda watch --only-lambda-apis on 127.0.0.1:$lambda_port"
cargo lambda watch --only-lambda-apis --invoke-address 127.0.0.1 --invoke-port "$lambda_port" >"$logs/watch-api.log" 2>&1 &
pids+=($!)
until (exec 3<>"/dev/tcp/127.0.0.1/$lambda_port") 2>/dev/null; do sleep 0.1; done
# The shard function: the same binary with other settings, so its own emulator (the proxy sends
# the invocations of `ferry-shard` there, as `ferry-export`).
cargo lambda watch --only-lambda-apis --invoke-address 127.0.0.1 --invoke-port "$shard_port" >"$logs/watch-shard-api.log" 2>&1 &
pids+=($!)
until (exec 3<>"/dev/tcp/127.0.0.1/$shard_port") 2>/dev/null; do sleep 0.1; done
instances() { # FUNCTION ENV_FILE LOG [COUNT [PORT [BINARY]]]: start the function's instances, polling the emulator
  local i
  for i in $(seq "${4:-$instances}"); do
    (set -a; . "$2"; set +a
     export AWS_LAMBDA_RUNTIME_API="http://127.0.0.1:${5:-$lambda_port}/.rt/$1" AWS_LAMBDA_FUNCTION_NAME="$1" \
       AWS_LAMBDA_FUNCTION_VERSION=1 AWS_LAMBDA_FUNCTION_MEMORY_SIZE=1024
     exec "$bin/${6:-$1}") >>"$3" 2>&1 &
    pids+=($!)
  done
}
# As template.yaml deploys them: the export function serves the plan, commit and failure steps,
# the shard function (the same binary) the shard step; the Map runs 4 shard workers at once.
{ cat "$logs/function.env"; echo "FERRY_STEPS=plan,commit,failed,direct"; } >"$logs/export.env"
{ cat "$logs/function.env"; echo "FERRY_STEPS=shard"; } >"$logs/shard.env"
instances ferry-export "$logs/export.env" "$logs/watch.log" 2
instances ferry-export "$logs/shard.env" "$logs/watch.log" 4 "$shard_port"

status() { "$bin/ferry" status --job lambda --table e2e-state --json | py -c 'import json,sys; print(json.load(sys.stdin)["sequence"])'; }
compare() { # SEQUENCE
  py scripts/bundle-content.py e2e-export bundles/lambda "$1" >"$logs/lambda-$1.json"
  py scripts/bundle-content.py e2e-export bundles/cli "$1" >"$logs/cli-$1.json"
  if ! cmp -s "$logs/lambda-$1.json" "$logs/cli-$1.json"; then
    echo "bundle $1 differs between the state machine and the CLI" >&2; diff <(py -m json.tool "$logs/lambda-$1.json") <(py -m json.tool "$logs/cli-$1.json") >&2; exit 1
  fi
  py -c 'import json,sys; c=json.load(open(sys.argv[1])); print("bundle %d: %d objects, %d deleted, %d moved: identical to the one-shard CLI export" % (c["sequence"], len(c["objects"]), len(c["deleted"]), len(c["moved"])))' "$logs/lambda-$1.json"
}
volumes() { py -c 'import boto3,sys; r=boto3.client("s3").list_objects_v2(Bucket="e2e-export", Prefix=f"bundles/lambda/{int(sys.argv[1]):08d}/"); print(sum(o["Key"].endswith(".zip.age") for o in r.get("Contents", [])))' "$1"; }
cli_export() { "$bin/ferry" export --job cli --source s3://e2e-source --dest s3://e2e-export/bundles --table e2e-state --volume-size 8MiB --shards 1 --encrypt-to "$recipient" >/dev/null; }

# The definition as CloudFormation would deploy it: DefinitionSubstitutions filled in (the
# emulator knows the function by its name).
machine=$(py - statemachine/export.asl.json <<'PY'
import boto3, json, sys
text = open(sys.argv[1]).read()
text = (text.replace("${ExportFunctionArn}", "ferry-export").replace("${ShardFunctionArn}", "ferry-shard")
        .replace("${MaxConcurrency}", "4"))
json.loads(text)  # every placeholder is filled
sfn = boto3.client("stepfunctions")
print(sfn.create_state_machine(name="lambda-export", definition=text,
                               roleArn="arn:aws:iam::123456789012:role/lambda-export")["stateMachineArn"])
PY
)
run_machine() { # NAME INPUT EXPECTED_STATUS: start an execution, wait for it, print its outcome
  py - "$machine" "$1" "$2" "$3" "$logs" <<'PY'
import boto3, json, sys, time
machine, name, payload, want, logs = sys.argv[1:6]
sfn = boto3.client("stepfunctions")
arn = sfn.start_execution(stateMachineArn=machine, name=name, input=payload)["executionArn"]
for _ in range(1200):
    d = sfn.describe_execution(executionArn=arn)
    if d["status"] != "RUNNING":
        break
    time.sleep(0.5)
runs = sfn.list_map_runs(executionArn=arn).get("mapRuns", [])
counts = [sfn.describe_map_run(mapRunArn=r["mapRunArn"])["itemCounts"] for r in runs]
print(f"execution {name}: {d['status']}; map runs: " + (", ".join(
    f"{c['succeeded']} of {c['total']} shards succeeded, {c['failed']} failed" for c in counts) or "none"))
ok = d["status"] == want and all(c["failed"] == 0 for c in counts)
if not ok:
    events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    for e in events[-30:]:
        print(json.dumps(e, default=str)[:600], file=sys.stderr)
    sys.exit(f"execution {name} ended {d['status']} (expected {want})")
json.dump({"output": json.loads(d.get("output") or "null"), "map_runs": counts},
          open(f"{logs}/execution-{name}.json", "w"))
PY
}
shard_steps() { grep -c 'shard step' "$logs/watch.log" || true; }
check_sharded() { # NAME SEQUENCE MIN_SHARDS
  py - "$logs/execution-$1.json" "$2" "$3" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))
out, seq, least = e["output"], int(sys.argv[2]), int(sys.argv[3])
assert out["status"] == "complete" and out["sequence"] == seq, out
assert out["shards"] >= least, f"the bundle was cut into {out['shards']} shards, expected {least} at least"
assert e["map_runs"] and e["map_runs"][0]["succeeded"] == out["shards"], e["map_runs"]
print(f"bundle {seq}: {out['shards']} shards, {len(out['volumes'])} volumes, {out['objects']} objects, "
      f"{out['deleted']} deleted, {out['moved']} moved")
PY
}

say "(a) the state machine, started with the EventBridge Scheduler input"
run_machine sched-1 '{"trigger": "schedule"}' SUCCEEDED
[ "$(status)" = 1 ] || { echo "bundle 1 was not committed; function log:" >&2; tail -50 "$logs/watch.log" >&2; exit 1; }
check_sharded sched-1 1 8
cli_export
compare 1
steps_a=$(shard_steps)
echo "bundle 1: $steps_a shard steps for its 8 shards, $(volumes 1) volumes"
[ "$steps_a" -gt 8 ] || { echo "expected the shard loops to take more than one step each for some shard" >&2; exit 1; }

say "(c) a run whose input is refused ends FAILED through the failure step"
run_machine refused-1 '{"fulll": true}' FAILED
grep -q 'fulll' "$logs/watch.log" || { echo "the refusal does not name the field" >&2; exit 1; }
grep -q 'export run failed' "$logs/watch.log" || { echo "the failure step did not run" >&2; exit 1; }
echo "refused: $(grep -o 'unknown field[^(]*' "$logs/watch.log" | head -1)"
# The export function does not serve the shard step (FERRY_STEPS): only the shard function does.
if out=$(cargo lambda invoke ferry-export --invoke-address 127.0.0.1 --invoke-port "$lambda_port" \
    --data-ascii '{"step": "shard", "execution": "x", "sequence": 2, "shard": 0}' 2>&1); then
  echo "the export function served a shard step: $out" >&2; exit 1
fi
grep -q 'FERRY_STEPS' <<<"$out" || { echo "the refusal does not name FERRY_STEPS: $out" >&2; exit 1; }
echo "the export function refuses a shard step: $(grep -o 'this function serves[^`]*' <<<"$out" | head -1)"

say "(b) after changes, started with a classic EventBridge envelope"
py scripts/demo-bucket.py mutate e2e-source
run_machine envelope-2 '{"version":"0","id":"e2e","detail-type":"Scheduled Event","source":"aws.events","account":"123456789012","time":"2026-11-01T03:00:00Z","region":"us-east-1","resources":[],"detail":{}}' SUCCEEDED
[ "$(status)" = 2 ] || { echo "bundle 2 was not committed; function log:" >&2; tail -50 "$logs/watch.log" >&2; exit 1; }
check_sharded envelope-2 2 2
cli_export
compare 2
echo "bundle 2: $(( $(shard_steps) - steps_a )) shard steps, $(volumes 2) volumes"

say "import function: bundles uploaded to an import bucket, replayed in order"
py -c 'import boto3; s3=boto3.client("s3"); [s3.create_bucket(Bucket=b) for b in ("e2e-import", "e2e-dest")]'
# A reviewer approves each bundle in the export bucket; the import function requires it
# (REQUIRED_APPROVALS, APPROVERS as one line of base64 DER) and logs every run (AUDIT_PREFIX).
"$bin/ferry" keygen --out "$logs/reviewer" >/dev/null
approver=$(grep -v -- ----- "$logs/reviewer.pub" | tr -d '\n')
secret=$(py -c 'import boto3,sys; print(boto3.client("secretsmanager", region_name="us-east-1").create_secret(Name="ferry-age-identity", SecretString=open(sys.argv[1]).read())["ARN"])' "$logs/age.key")
cat >"$logs/import.env" <<ENV
FERRY_JOB=lambda
IMPORT_BUCKET=e2e-import
AGE_IDENTITY_SECRET=$secret
DEST_BUCKET=e2e-dest
STATE_TABLE=e2e-state
RUN_BUDGET=0s
MAX_HOPS=60
REQUIRED_APPROVALS=1
APPROVERS=$approver
AUDIT_PREFIX=audit/
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
for n in 1 2; do
  "$bin/ferry" approve "s3://e2e-export/bundles/lambda/0000000$n/" --signing-key "file:$logs/reviewer" --note "e2e review"
done
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
say "audit logs of both functions, checked by ferry audit"
"$bin/ferry" audit s3://e2e-export/audit/export/lambda/
"$bin/ferry" audit s3://e2e-import/audit/import/lambda/ --json | py -c '
import json, sys
r = json.load(sys.stdin)
ok = [l for l in r["lines"] if l["action"] == "import" and l["outcome"] == "ok"]
assert len(ok) == 2, r["lines"]
assert all(l["reason"].startswith("approved by") for l in ok), ok
print("import log: %d lines, bundles %s imported with their approval; head %s" % (r["count"], [l["sequence"] for l in ok], r["head"][:16]))'

# A long tail: TAIL_OBJECTS tiny objects, then all but TAIL_KEEP of them deleted and TAIL_MOVES
# of those renamed. The import function applies the second bundle's deletions (1,000 per
# step) and moves (1,000 per step) over several hops, one step per hop (RUN_BUDGET=0s),
# saving its progress in the table between hops.
tail_objects=${TAIL_OBJECTS:-2600} tail_keep=${TAIL_KEEP:-200} tail_moves=${TAIL_MOVES:-300}
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
  -e '/^REQUIRED_APPROVALS=/d' -e '/^APPROVERS=/d' \
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
