#!/usr/bin/env bash
# The main job on local emulators: seed a sample bucket, export a baseline bundle, change the
# bucket (add, overwrite, delete, rename, metadata-only), export the delta, show both summaries
# and the bundle listing; then the far side: download both bundles, verify them, import them
# (dry run first) into a destination bucket and a directory, and show that the destination
# equals the source. Every bundle is signed by a KMS key and sealed with age: the media carries
# only ciphertext. Everything runs against a moto server on 127.0.0.1 started here.
set -euo pipefail
cd "$(dirname "$0")/.."
# Bold only on a terminal (a CI log shows the text, not escape codes).
if [ -t 1 ]; then say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }; else say() { printf '\n==> %s\n' "$*"; }; fi

scripts/setup.sh
say "building ferry (a fresh clone compiles ~300 crates: 5-10 minutes on 2 cores; cargo shows its progress)"
cargo build --bin ferry
ferry=target/debug/ferry

port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
env -u AWS_CA_BUNDLE .venv/bin/moto_server -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
moto=$!
trap 'kill $moto 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "http://127.0.0.1:$port/moto-api/" >/dev/null || { cat "$log"; echo "moto did not start" >&2; exit 1; }

export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo \
  AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true FERRY_S3_PATH_STYLE=true
py() { env -u AWS_CA_BUNDLE .venv/bin/python "$@"; }
job=(--job demo --source s3://demo-source --dest s3://demo-export/bundles --table ferry-state)

say "moto on $AWS_ENDPOINT_URL; seeding s3://demo-source"
py scripts/demo-bucket.py seed demo-source
py -c 'import boto3; boto3.client("s3").create_bucket(Bucket="demo-export")'
$ferry init --table ferry-state

say "ferry plan (baseline)"
$ferry plan "${job[@]}"
say "a KMS signing key (ECC_NIST_P256) signs every bundle; the far side trusts its public key"
key_id=$(py -c 'import boto3; print(boto3.client("kms", region_name="us-east-1").create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"])')
trusted=$(mktemp)
$ferry public-key --signing-key "kms:$key_id" | tee "$trusted"
say "an age key pair (age-keygen): the export seals every volume to its recipient; the identity stays on the far side"
identity=$(mktemp -u)
age-keygen -o "$identity" 2>/dev/null
recipient=$(age-keygen -y "$identity")
echo "recipient $recipient"
sign=(--signing-key "kms:$key_id" --encrypt-to "$recipient")
# Every action of each side appends a hash-chained line to that side's audit log.
audit_dir=${DEMO_AUDIT_DIR:-$(mktemp -d)}
mkdir -p "$audit_dir"
near_log="$audit_dir/near-audit.jsonl" far_log="$audit_dir/far-audit.jsonl"
rm -f "$near_log" "$far_log"
sign+=(--audit-log "$near_log")

say "ferry export (baseline, signed and sealed)"
$ferry export "${job[@]}" "${sign[@]}"

say "changing the bucket"
py scripts/demo-bucket.py mutate demo-source
say "ferry plan (delta)"
$ferry plan "${job[@]}"
say "ferry export (delta, signed and sealed)"
$ferry export "${job[@]}" "${sign[@]}" --json | py -m json.tool

say "ferry export again: nothing changed"
$ferry export "${job[@]}" "${sign[@]}"
say "ferry status"
$ferry status --job demo --table ferry-state

say "the export bucket"
py - <<'PY'
import boto3
for o in boto3.client("s3").list_objects_v2(Bucket="demo-export", Prefix="bundles/demo/")["Contents"]:
    print(f"{o['Size']:>12,}  s3://demo-export/{o['Key']}")
PY
say "the delta bundle's volume: ciphertext; the age tool and the identity open it, then unzip reads it"
tmp=$(mktemp -d)
py - "$tmp" <<'PY'
import boto3, sys
boto3.client("s3").download_file("demo-export", "bundles/demo/00000002/demo-00000002-0001.zip.age", sys.argv[1] + "/v.zip.age")
PY
head -c 22 "$tmp/v.zip.age"; echo " … (an age file)"
age -d -i "$identity" "$tmp/v.zip.age" | bsdtar -tf - | sed -n 1,5p
age -d -i "$identity" -o "$tmp/v.zip" "$tmp/v.zip.age"
unzip -l "$tmp/v.zip"
unzip -p "$tmp/v.zip" _ferry/manifest.json | py -c 'import json,sys; m=json.load(sys.stdin); f=m["final"]; print("deleted:", f["deleted"]); print("moved:", [(x["from"], x["to"]) for x in f["moved"]]); print("totals:", f["totals"])'
rm -rf "$tmp"

say "release: two reviewers, each with a KMS key of their own, approve bundles in the export bucket"
carry=$(mktemp -d)
trap 'kill $moto 2>/dev/null || true; rm -rf "$log" "$carry" "$trusted" "$identity"' EXIT
for r in alice bob; do
  rid=$(py -c 'import boto3; print(boto3.client("kms", region_name="us-east-1").create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY", Description="reviewer")["KeyMetadata"]["KeyId"])')
  printf -v "${r}_key" %s "$rid"
  $ferry public-key --signing-key "kms:$rid" >"$carry/$r.pub"
done
$ferry approve s3://demo-export/bundles/demo/00000001/ --signing-key "kms:$alice_key" --note "CHG-1001 baseline reviewed" --audit-log "$near_log"
$ferry approve s3://demo-export/bundles/demo/00000002/ --signing-key "kms:$alice_key" --note "CHG-1002 delta reviewed" --audit-log "$near_log"
$ferry approve s3://demo-export/bundles/demo/00000001/ --signing-key "kms:$bob_key" --note "CHG-1001 second reviewer" --audit-log "$near_log"
say "carrying it across: ferry download (every bundle since 0, with their approvals)"
$ferry download --from s3://demo-export/bundles --job demo --since 0 --to "$carry" --audit-log "$far_log"
echo "on the media:"; (cd "$carry" && find . -type f | sort)
say "ferry verify without a secret (offline, no AWS: the ciphertext against SHA256SUMS, the signature by the trusted key)"
env -i "$ferry" verify "$carry/demo" --trust "$trusted"
say "ferry verify --identity (offline: every entry of every volume, and the signature)"
env -i "$ferry" verify "$carry/demo" --trust "$trusted" --identity "$identity" --audit-log "$far_log"
py -c 'import boto3; boto3.client("s3").create_bucket(Bucket="demo-dest")'
say "ferry import --dry-run into s3://demo-dest"
$ferry import "$carry/demo" --to s3://demo-dest --state "$carry/demo-dest.json" --dry-run --trust "$trusted" --identity "$identity" | grep -v '^  put ' | head -20
approvals=(--require-approvals 2 --approver "$carry/alice.pub" --approver "$carry/bob.pub")
say "ferry import into s3://demo-dest needing two approvals: bundle 2 has one, so nothing is written (exit 5)"
if $ferry import "$carry/demo" --to s3://demo-dest --state "$carry/demo-dest.json" --trust "$trusted" --identity "$identity" \
  "${approvals[@]}" --audit-log "$far_log"; then
  echo "the import applied a bundle short of its approvals" >&2; exit 1
else
  echo "exit $?; s3://demo-dest holds $(py -c 'import boto3; print(boto3.client("s3").list_objects_v2(Bucket="demo-dest").get("KeyCount", 0))') objects"
fi
say "bob approves bundle 2 too; ferry download --approvals-only brings the new approval to the media"
$ferry approve s3://demo-export/bundles/demo/00000002/ --signing-key "kms:$bob_key" --note "CHG-1002 second reviewer" --audit-log "$near_log"
$ferry download --from s3://demo-export/bundles --job demo --approvals-only --to "$carry" --audit-log "$far_log"
say "ferry review lists each bundle's approvals, checked against the reviewers' keys"
$ferry review "$carry/demo/00000002" --identity "$identity" --trust "$trusted" --approver "$carry/alice.pub" --approver "$carry/bob.pub" | grep -E 'approval|^bundle'
say "ferry import into s3://demo-dest (two approvals each)"
$ferry import "$carry/demo" --to s3://demo-dest --state "$carry/demo-dest.json" --trust "$trusted" --identity "$identity" \
  "${approvals[@]}" --audit-log "$far_log"
say "ferry import again, without the approval flags (the import state remembers them): both already applied"
$ferry import "$carry/demo" --to s3://demo-dest --state "$carry/demo-dest.json" --identity "$identity" --audit-log "$far_log"
say "ferry import into a directory"
$ferry import "$carry/demo" --to-dir "$carry/mirror" --trust "$trusted" --identity "$identity"
echo "$(find "$carry/mirror" -type f -not -path '*/.ferry/*' | wc -l) files in $carry/mirror"
say "source and destination"
py scripts/compare-buckets.py demo-source demo-dest
show_log() { # FILE: ferry audit checks it, then one row per line
  $ferry audit "$1"
  $ferry audit "$1" --json | py -c '
import json, sys
r = json.load(sys.stdin)
print("%-8s %-6s %4s %-16s %7s %9s  %-36s %-12s %-12s" % ("action", "job", "seq", "outcome", "objects", "bytes", "who", "prev", "hash"))
for l in r["lines"]:
    print("%-8s %-6s %4s %-16s %7s %9s  %-36s %-12s %-12s" % (l["action"], l["job"] or "-", l["sequence"] if l["sequence"] is not None else "-", l["outcome"], l["objects"], l["bytes"], l["who"][:36], (l["prev"] or "null")[:12], l["hash"][:12]))'
}
say "the near side's audit log ($near_log)"
show_log "$near_log"
say "the far side's audit log ($far_log)"
show_log "$far_log"

say "transfer controls: a second job exports s3://demo-screened under a content policy"
py scripts/demo-bucket.py screened demo-screened "$carry/sample.bin"
cat >"$carry/export-policy.toml" <<'TOML'
max_size = "1MiB"
deny_keys = ["**/*.exe"]
deny_keywords = ["TOP SECRET", "NOFORN"]
TOML
cat "$carry/export-policy.toml"
screened=(--job demo-screened --source s3://demo-screened --dest s3://demo-export/bundles --table ferry-state)
$ferry export "${screened[@]}" --policy "$carry/export-policy.toml"
say "the far side: ferry review with its own policy (JSON, CSV and a self-contained HTML page)"
$ferry download --from s3://demo-export/bundles --job demo-screened --to "$carry" >/dev/null
cat >"$carry/import-policy.toml" <<'TOML'
deny_types = ["application/x-executable"]
type_mismatch = "withhold"
TOML
$ferry review "$carry/demo-screened" --policy "$carry/import-policy.toml" --html "$carry/review.html" --csv "$carry/review.csv"
echo "report: $carry/review.html ($(wc -c <"$carry/review.html") bytes), $carry/review.csv"
if command -v chromium >/dev/null; then
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$carry/chromium" --hide-scrollbars \
    --window-size=1400,1600 --screenshot="$carry/review.png" "file://$carry/review.html" 2>/dev/null
  # DEMO_SCREENSHOT=docs/review.png keeps it (the README shows that one).
  [ -n "${DEMO_SCREENSHOT:-}" ] && cp "$carry/review.png" "$DEMO_SCREENSHOT"
  echo "screenshot of the report: ${DEMO_SCREENSHOT:-$carry/review.png}"
fi
say "ferry import with the far side's policy, clamscan and a quarantine folder"
py -c 'import boto3; boto3.client("s3").create_bucket(Bucket="demo-screened-dest")'
sigtool --md5 "$carry/sample.bin" >"$carry/signatures.hdb"
$ferry import "$carry/demo-screened" --to s3://demo-screened-dest --state "$carry/screened.json" \
  --policy "$carry/import-policy.toml" --scan "clamscan --no-summary -d '$carry/signatures.hdb' {}" \
  --quarantine "$carry/quarantine" --json >"$carry/screened-import.json"
py - "$carry/screened-import.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["bundles"][0]
print("applied: %d objects written, %d quarantined" % (r["objects"], r["quarantined"]))
for q in r["quarantined_objects"]:
    print("  %-24s %s" % (q["key"], q["reason"]))
PY
find "$carry/quarantine" -type f | sort


say "what a scanner costs: the 302-object baseline bundle imported without and with --scan (clamscan, 2 at once)"
for mode in without with; do
  py -c "import boto3; boto3.client('s3').create_bucket(Bucket='demo-time-$mode')"
  scan=(); [ "$mode" = with ] && scan=(--scan "clamscan --no-summary -d '$carry/signatures.hdb' {}")
  start=$(date +%s%N)
  $ferry import "$carry/demo/00000001" --to "s3://demo-time-$mode" --state "$carry/time-$mode.json" \
    --identity "$identity" "${scan[@]}" --json >/dev/null 2>&1
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  printf '  %s --scan: %d.%d s\n' "$mode" $((ms / 1000)) $((ms % 1000 / 100))
done
