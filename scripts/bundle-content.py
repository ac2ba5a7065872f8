"""Print what a bundle carries, independent of how it is cut into volumes: objects (key, size,
sha256, content type, metadata), deletions and moves, as canonical JSON. Used to compare two
exports of the same data.  Usage: bundle-content.py BUCKET PREFIX/JOB SEQUENCE
Sealed volumes (.zip.age) are opened with `age -d -i $AGE_IDENTITY_FILE`."""
import io
import json
import os
import subprocess
import sys
import zipfile

import boto3

s3 = boto3.client("s3")
bucket, job_prefix, seq = sys.argv[1], sys.argv[2], int(sys.argv[3])
prefix = f"{job_prefix}/{seq:08d}/"
summary = json.load(s3.get_object(Bucket=bucket, Key=prefix + "bundle.json")["Body"])
objects, last = [], None
for v in summary["volumes"]:
    body = s3.get_object(Bucket=bucket, Key=prefix + v["name"])["Body"].read()
    if v["name"].endswith(".age"):
        body = subprocess.run(["age", "-d", "-i", os.environ["AGE_IDENTITY_FILE"]], input=body,
                              check=True, capture_output=True).stdout
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(body)).read("_ferry/manifest.json"))
    objects += [{k: o.get(k) for k in ("key", "size", "sha256", "content_type", "metadata")}
                for o in manifest["objects"]]
    last = manifest.get("final") or last
print(json.dumps({
    "sequence": summary["sequence"],
    "objects": sorted(objects, key=lambda o: o["key"]),
    "deleted": sorted(last["deleted"] + last["vanished"]),
    "moved": sorted((m["from"], m["to"]) for m in last["moved"]),
}, sort_keys=True))
