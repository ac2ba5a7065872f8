"""Compare two bucket prefixes as a reader sees them: keys, bytes, Content-Type and the other
headers, user metadata. Prints the number of identical objects, or the differences (exit 1).

  compare-buckets.py SRC_BUCKET[/PREFIX] DST_BUCKET[/PREFIX]
"""
import hashlib
import sys

import boto3

s3 = boto3.client("s3")
HEADERS = ["ContentType", "ContentEncoding", "ContentDisposition", "ContentLanguage",
           "CacheControl", "ExpiresString", "Metadata"]


def snapshot(spec):
    bucket, _, prefix = spec.partition("/")
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            r = s3.get_object(Bucket=bucket, Key=o["Key"])
            body = r["Body"].read()
            out[o["Key"][len(prefix):]] = (hashlib.sha256(body).hexdigest(), len(body),
                                           {h: r.get(h) for h in HEADERS})
    return out


src, dst = snapshot(sys.argv[1]), snapshot(sys.argv[2])
bad = [f"only in {sys.argv[1]}: {k}" for k in sorted(src.keys() - dst.keys())]
bad += [f"only in {sys.argv[2]}: {k}" for k in sorted(dst.keys() - src.keys())]
bad += [f"differs: {k}: {src[k]} != {dst[k]}" for k in sorted(src.keys() & dst.keys()) if src[k] != dst[k]]
if bad:
    print("\n".join(bad[:50]), file=sys.stderr)
    sys.exit(1)
print(f"{len(src)} objects identical in s3://{sys.argv[1]} and s3://{sys.argv[2]} "
      f"({sum(v[1] for v in src.values()):,} bytes; keys, bytes, headers and metadata)")
