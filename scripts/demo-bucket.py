"""Seed and mutate the demo's sample bucket (used by scripts/demo.sh).

  demo-bucket.py seed BUCKET [N] N (default 300) objects with headers and metadata, an index
                                 page, and one 12 MiB multipart object
  demo-bucket.py mutate BUCKET   add, overwrite, delete, rename and a metadata-only change
  demo-bucket.py screened BUCKET SAMPLE  objects that break a content policy or a scanner's
                                 signature (written to SAMPLE), and ordinary ones
  demo-bucket.py many BUCKET N   N tiny objects (many/NNNNNNN), 32 writers at once
  demo-bucket.py thin BUCKET K R keep K of the `many` objects, rename R of them, delete the rest
"""
import io
import os
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
from boto3.s3.transfer import TransferConfig

s3 = boto3.client("s3")
cmd, bucket = sys.argv[1], sys.argv[2]
rng = random.Random(42)

if cmd == "seed":
    s3.create_bucket(Bucket=bucket)
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 300
    for i in range(count):
        folder = ["reports", "images", "logs"][i % 3]
        body = bytes(rng.getrandbits(8) for _ in range(rng.randint(100, 20_000)))
        s3.put_object(
            Bucket=bucket,
            Key=f"{folder}/2026/{i:04d}.dat",
            Body=body,
            ContentType="application/octet-stream",
            Metadata={"seq": str(i), "team": folder},
        )
    s3.put_object(Bucket=bucket, Key="index.html", Body=b"<h1>demo</h1>",
                  ContentType="text/html", CacheControl="max-age=300", ContentLanguage="en")
    big = os.urandom(12 * 1024 * 1024)
    s3.upload_fileobj(io.BytesIO(big), bucket, "archives/backup.tar",
                      ExtraArgs={"ContentType": "application/x-tar"},
                      Config=TransferConfig(multipart_threshold=5 * 1024 * 1024,
                                            multipart_chunksize=5 * 1024 * 1024))
    print(f"seeded s3://{bucket}: {count + 2} objects (one 12 MiB multipart upload)")
elif cmd == "screened":
    # What a content policy and a scanner are for: a few objects that break a rule, and
    # ordinary ones beside them.
    s3.create_bucket(Bucket=bucket)
    elf = b"\x7fELF\x02\x01\x01" + bytes(121)
    objects = {
        "reports/q1.txt": (b"Quarterly figures, all public.\n" * 20, "text/plain", {}),
        "reports/q2.pdf": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< >>\nendobj\n", "application/pdf", {}),
        "reports/q3.pdf": (elf, "application/pdf", {}),
        "reports/memo.txt": (b"Draft. TOP SECRET - do not release.\n", "text/plain", {}),
        "reports/tagged.txt": (b"An ordinary note.\n", "text/plain", {"classification": "NOFORN"}),
        "tools/setup.exe": (b"MZ" + bytes(200), "application/octet-stream", {}),
        "images/logo.png": (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(64), "image/png", {}),
        "samples/flagged.bin": (b"DEMO SAMPLE THE SCANNER KNOWS\n", "application/octet-stream", {}),
        "data/big.bin": (os.urandom(2 * 1024 * 1024), "application/octet-stream", {}),
        "notes/readme.md": (b"# Notes\nNothing to see.\n", "text/markdown", {}),
    }
    for key, (body, ctype, meta) in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=ctype, Metadata=meta)
    with open(sys.argv[3], "wb") as f:
        f.write(objects["samples/flagged.bin"][0])
    print(f"seeded s3://{bucket}: {len(objects)} objects")
elif cmd == "many":
    s3.create_bucket(Bucket=bucket)
    count = int(sys.argv[3])
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=bucket, Key=f"many/{i:07d}",
                                              Body=f"object {i}\n".encode()), range(count)))
    print(f"seeded s3://{bucket}: {count} tiny objects")
elif cmd == "thin":
    time.sleep(1.1)  # listings show LastModified to the second
    keep, renames = int(sys.argv[3]), int(sys.argv[4])
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="many/")
            for o in page.get("Contents", [])]
    moved = keys[keep:keep + renames]
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda k: s3.copy_object(Bucket=bucket, Key="renamed/" + k,
                                               CopySource={"Bucket": bucket, "Key": k}), moved))
    gone = keys[keep:]
    for i in range(0, len(gone), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in gone[i:i + 1000]],
                                                  "Quiet": True})
    print(f"thinned s3://{bucket}: {keep} kept, {len(moved)} renamed, {len(gone) - len(moved)} deleted")
elif cmd == "mutate":
    time.sleep(1.1)  # listings show LastModified to the second
    s3.put_object(Bucket=bucket, Key="reports/2026/new-report.csv", Body=b"a,b\n1,2\n",
                  ContentType="text/csv")
    s3.put_object(Bucket=bucket, Key="reports/2026/0000.dat", Body=b"overwritten")
    s3.delete_object(Bucket=bucket, Key="logs/2026/0002.dat")
    s3.copy_object(Bucket=bucket, Key="images/renamed/0001.dat",
                   CopySource={"Bucket": bucket, "Key": "images/2026/0001.dat"})
    s3.delete_object(Bucket=bucket, Key="images/2026/0001.dat")
    s3.copy_object(Bucket=bucket, Key="index.html", CopySource={"Bucket": bucket, "Key": "index.html"},
                   MetadataDirective="REPLACE", ContentType="text/html; charset=utf-8",
                   Metadata={"reviewed": "yes"})
    print("mutated: 1 added, 1 overwritten, 1 deleted, 1 renamed, 1 metadata-only change")
