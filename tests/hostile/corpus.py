#!/usr/bin/env python3
"""Builds the corpus of hostile volumes: each is what an attacker (or a bad stick) could put on
the media, with the outcome ferry must give. Usage: corpus.py OUT_DIR. Writes OUT_DIR/NAME.zip
files and OUT_DIR/expected.json: {"NAME.zip": {"exit": 0 or 5, "why": "..."}}.

Every volume is a one-volume baseline bundle of job `hostile`; the valid ones are built the way
ferry builds them (entries `BUCKET/KEY`, the manifest `_ferry/manifest.json` last)."""

import base64
import binascii
import hashlib
import io
import json
import os
import struct
import sys
import zipfile
import zlib

OUT = sys.argv[1]
os.makedirs(OUT, exist_ok=True)
expected = {}
MANIFEST = "_ferry/manifest.json"
MIB = 1024 * 1024


def obj(key, data, **headers):
    e = {
        "key": key,
        "entry": f"bkt/{key}",
        "size": len(data),
        "etag": hashlib.md5(data).hexdigest(),
        "last_modified": "2026-11-01T00:00:00Z",
        "sha256": hashlib.sha256(data).hexdigest(),
        "crc32": binascii.crc32(data),
        "storage_class": "STANDARD",
        "metadata": {},
    }
    e.update(headers)
    return e


def manifest(objects, **final):
    f = {
        "volume_count": 1,
        "earlier_volumes": [],
        "deleted": [],
        "moved": [],
        "skipped": [],
        "vanished": [],
        "totals": {"objects": len(objects), "bytes": sum(o["size"] for o in objects),
                   "deleted": 0, "moved": 0, "skipped": 0, "vanished": 0, "replaced": 0},
    }
    f.update(final)
    return {
        "format": "s3-ferry/1", "job": "hostile", "source": {"bucket": "bkt", "prefix": ""},
        "sequence": 1, "previous": None, "baseline": True, "volume": 1,
        "listed_at": "2026-11-01T00:00:00Z", "objects": objects, "final": f,
    }


def volume(files, man, compression=zipfile.ZIP_STORED, manifest_bytes=None):
    """A zip of (key, data) files and the manifest, as bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for key, data in files:
            z.writestr(f"bkt/{key}", data)
        body = manifest_bytes if manifest_bytes is not None else json.dumps(man).encode()
        z.writestr(MANIFEST, body)
    return bytearray(buf.getvalue())


def save(name, data, exit_code, why):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
    expected[name] = {"exit": exit_code, "why": why}


def eocd_at(v):
    return v.rindex(b"PK\x05\x06")


def valid(compression=zipfile.ZIP_STORED, files=None):
    files = files or [("a/b.txt", b"hello\n"), ("c.bin", bytes(range(256)) * 64)]
    return volume(files, manifest([obj(k, d) for k, d in files]), compression), files


# --- genuine volumes: they must verify and import (exit 0) ------------------------------------
v, _ = valid()
save("valid-stored.zip", v, 0, "a genuine volume")
text = b"".join(b"line %d of a text object that compresses well\n" % i for i in range(8000))
v, _ = valid(zipfile.ZIP_DEFLATED, [("big.txt", text), ("small.txt", b"x")])
save("valid-deflate.zip", v, 0, "a genuine deflate volume whose entry inflates past one read chunk")

# --- ZIP64 end record pointing anywhere ----------------------------------------------------------
v, _ = valid()
e = eocd_at(v)
cd_size, cd_off = struct.unpack_from("<II", v, e + 12)
z64 = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, 3, 3, 2**64 - 1, 1)
loc = struct.pack("<IIQI", 0x07064B50, 0, e, 1)
eocd = bytearray(v[e:e + 22])
struct.pack_into("<HHIIH", eocd, 8, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
save("zip64-cd-size-max.zip", v[:e] + z64 + loc + eocd, 5,
     "ZIP64 end record: directory at offset 1 of 2^64-1 bytes")
z64 = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, 2**63, 2**63, 2**64 - 8, 2**64 - 8)
loc = struct.pack("<IIQI", 0x07064B50, 0, 2**64 - 16, 1)
save("zip64-locator-wraps.zip", v[:e] + z64 + loc + eocd, 5,
     "ZIP64 locator and record whose offsets wrap around 2^64")

# --- central directory entries with forged offsets and sizes -------------------------------------
def patch_central(v, name, fn):
    """Apply fn(buffer, offset_of_central_header) to the central header of entry `name`."""
    at = v.index(b"PK\x01\x02" + b"\x00" * 0, 0)
    while True:
        at = v.index(b"PK\x01\x02", at)
        n = struct.unpack_from("<H", v, at + 28)[0]
        if v[at + 46:at + 46 + n] == f"bkt/{name}".encode():
            fn(v, at)
            return v
        at += 4


v, _ = valid()
save("offset-past-directory.zip",
     patch_central(v, "c.bin", lambda b, at: struct.pack_into("<I", b, at + 42, 0xFFFFFF00)), 5,
     "an entry's local header offset lies past the central directory")
v, _ = valid()
def wrap(b, at):
    # ZIP64 sizes through an extra field: offset near 2^64, size chosen so offset+size wraps.
    struct.pack_into("<II", b, at + 20, 0xFFFFFFFF, 0xFFFFFFFF)
    struct.pack_into("<I", b, at + 42, 0xFFFFFFFF)
    n, x = struct.unpack_from("<HH", b, at + 28)
save("offset-size-wrap.zip", patch_central(v, "c.bin", wrap), 5,
     "an entry whose sizes and offset claim ZIP64 without the fields (or wrap)")
v, _ = valid()
save("declared-2-pow-60.zip",
     patch_central(v, "c.bin", lambda b, at: struct.pack_into("<I", b, at + 24, 0xFFFFFFF0)), 5,
     "an entry declares far more bytes than the volume holds")

# --- manifests that claim absurd counts ------------------------------------------------------------
files = [("a.txt", b"a")]
for count, name in [(20_000_000, "volume-count-20m.zip"), (2**32 - 1, "volume-count-u32-max.zip")]:
    save(name, volume(files, manifest([obj("a.txt", b"a")], volume_count=count)), 5,
         f"the final manifest claims {count} volumes")

# --- decompression bombs -------------------------------------------------------------------------
def bomb(declared, real):
    """A deflate entry declaring `declared` bytes that inflates to `real` bytes of zeros."""
    files = [("bomb.bin", b"\0" * 16)]
    man = manifest([obj("bomb.bin", b"\0" * declared)])
    v = volume(files, man, zipfile.ZIP_DEFLATED)
    # Replace the entry's compressed data with a stream of `real` zeros.
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = b"".join(c.compress(b"\0" * MIB) for _ in range(real // MIB)) + c.flush()
    lh = v.index(b"PK\x03\x04")
    n, x = struct.unpack_from("<HH", v, lh + 26)
    start = lh + 30 + n + x
    old_csize = struct.unpack_from("<I", v, lh + 18)[0]
    crc = binascii.crc32(b"\0" * declared)
    out = bytearray(v[:start]) + data + v[start + old_csize:]
    delta = len(data) - old_csize
    struct.pack_into("<III", out, lh + 14, crc, len(data), declared)
    cd = out.index(b"PK\x01\x02")
    while True:
        n2 = struct.unpack_from("<H", out, cd + 28)[0]
        name = out[cd + 46:cd + 46 + n2]
        if name == b"bkt/bomb.bin":
            struct.pack_into("<III", out, cd + 16, crc, len(data), declared)
        else:
            off = struct.unpack_from("<I", out, cd + 42)[0]
            struct.pack_into("<I", out, cd + 42, off + delta)
        x2, c2 = struct.unpack_from("<HH", out, cd + 30)
        nxt = cd + 46 + n2 + x2 + c2
        if out[nxt:nxt + 4] != b"PK\x01\x02":
            break
        cd = nxt
    e = eocd_at(out)
    off = struct.unpack_from("<I", out, e + 16)[0]
    struct.pack_into("<I", out, e + 16, off + delta)
    return out


save("deflate-bomb-10b.zip", bomb(10, 1024 * MIB), 5,
     "declares 10 bytes, inflates to 1 GiB (a 1 MiB volume)")
save("deflate-bomb-9mib.zip", bomb(9 * MIB, 1024 * MIB), 5,
     "declares 9 MiB, inflates to 1 GiB")

# --- a manifest padded to a gigabyte ---------------------------------------------------------------
files = [("a.txt", b"a")]
man = json.dumps(manifest([obj("a.txt", b"a")])).encode()
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("bkt/a.txt", b"a")
    with z.open(MANIFEST, "w", force_zip64=True) as m:
        m.write(man)
        for _ in range(1024):
            m.write(b" " * MIB)
save("manifest-1gib-of-spaces.zip", bytearray(buf.getvalue()), 5,
     "a deflated manifest of valid JSON followed by 1 GiB of spaces")

# --- damage and lies ---------------------------------------------------------------------------
v, _ = valid()
save("truncated.zip", v[: len(v) // 2], 5, "cut in half")
save("not-a-zip.zip", bytearray(b"this is not a zip file\n" * 10), 5, "not a zip at all")
v, files = valid()
d = bytearray(v)
i = d.index(b"hello\n")
d[i] ^= 0x20
save("flipped-data.zip", d, 5, "one flipped bit in an object's bytes")
files = [("a.txt", b"a")]
save("header-crlf.zip", volume(files, manifest([obj("a.txt", b"a", content_type="text/plain\r\nX-Evil: 1")])),
     5, "a Content-Type with CR/LF (no bucket can take it)")
save("metadata-name.zip", volume(files, manifest([obj("a.txt", b"a", metadata={"bad name:": "v"})])),
     5, "a metadata name that is not an HTTP header name")
long_key = "/".join(["s" * 200] * 40)
save("key-8000-bytes.zip", volume([(long_key, b"a")], manifest([obj(long_key, b"a")])), 5,
     "a key of 40 segments of 200 bytes (S3 keys have at most 1024 bytes)")
save("manifest-not-json.zip", volume(files, None, manifest_bytes=b"{not json"), 5,
     "a manifest that is not JSON")
save("entry-not-in-manifest.zip",
     volume([("a.txt", b"a"), ("extra.txt", b"x")], manifest([obj("a.txt", b"a")])), 5,
     "a zip entry the manifest does not list")
save("unsafe-key.zip", volume([("../../etc/passwd", b"a")], manifest([obj("../../etc/passwd", b"a")])), 0,
     "a key that climbs out of the folder: stored under _escaped/, never outside")

# --- fidelity fields: tags, Object Lock, S3's checksum, the redirect (S3's own limits) ------------
crc_a = base64.b64encode(struct.pack(">I", binascii.crc32(b"a"))).decode()
fidelity = dict(tags={"team": "blue", "cost-centre": "42"}, object_lock_mode="COMPLIANCE",
                object_lock_retain_until="2031-01-02T03:04:05Z", object_lock_legal_hold=True,
                checksum_algorithm="CRC32", checksum_type="FULL_OBJECT", checksum=crc_a,
                website_redirect_location="/elsewhere.html", part_layout=[[1, 1]])
save("fidelity-valid.zip", volume(files, manifest([obj("a.txt", b"a", **fidelity)])), 0,
     "tags, a COMPLIANCE retention with a legal hold, a CRC32, a redirect and a one-part layout, all as S3 allows them")
for name, change, why in [
    ("tags-eleven", {"tags": {f"k{i}": "v" for i in range(11)}}, "11 tags (S3 allows 10)"),
    ("tag-key-129", {"tags": {"k" * 129: "v"}}, "a tag key of 129 characters (S3 allows 128)"),
    ("tag-value-257", {"tags": {"k": "v" * 257}}, "a tag value of 257 characters (S3 allows 256)"),
    ("tag-aws-prefix", {"tags": {"aws:cloudformation:stack-name": "x"}}, "a tag key in the aws: namespace"),
    ("tag-newline", {"tags": {"k": "a\nb"}}, "a tag value with a newline (not in S3's tag alphabet)"),
    ("lock-mode", {"object_lock_mode": "FOREVER"}, "an Object Lock mode that is neither GOVERNANCE nor COMPLIANCE"),
    ("lock-date", {"object_lock_retain_until": "next tuesday"}, "a retain-until that is not a date"),
    ("lock-date-without-mode", {"object_lock_mode": None}, "a retain-until without a mode"),
    ("checksum-algorithm", {"checksum_algorithm": "MD4"}, "a checksum algorithm S3 does not have"),
    ("checksum-length", {"checksum": base64.b64encode(b"12345").decode()}, "a CRC32 of 5 bytes"),
    ("checksum-not-base64", {"checksum": "!!!!!!!!"}, "a checksum that is not base64"),
    ("checksum-type", {"checksum_type": "PARTIAL"}, "a checksum type that is neither FULL_OBJECT nor COMPOSITE"),
    ("redirect-2049", {"website_redirect_location": "/" + "r" * 2048}, "a redirect of 2,049 bytes (S3 allows 2 KiB)"),
    ("layout-sum", {"part_layout": [[2, 1]]}, "a part layout of 2 bytes for an object of 1"),
    ("layout-small-part", {"part_layout": [[0, 1], [1, 1]]}, "a part layout whose first part is under 5 MiB"),
    ("layout-10001-parts", {"part_layout": [[0, 10000], [1, 1]]}, "a part layout of 10,001 parts (S3 makes at most 10,000)"),
    ("layout-overflow", {"part_layout": [[2**64 - 1, 2**64 - 1]]}, "a part layout whose sizes overflow 64 bits"),
    ("layout-zero-run", {"part_layout": [[1, 1], [5, 0]]}, "a part layout with a run of no parts"),
]:
    fields = {k: v for k, v in {**fidelity, **change}.items() if v is not None}
    save(f"{name}.zip", volume(files, manifest([obj("a.txt", b"a", **fields)])), 5, why)

# --- metadata-only entries: new headers for bytes the destination holds -----------------------
def restated(key="a.txt", **headers):
    return {"key": key, "etag": hashlib.md5(b"a").hexdigest(), "size": 1,
            "last_modified": "2026-11-02T00:00:00Z",
            "headers": {"metadata": {}, "tags": {"team": "red"}, **headers}}


save("metadata-only-valid.zip",
     volume(files, manifest([obj("a.txt", b"a")], metadata_only=[restated(content_type="text/plain")])), 0,
     "an object and a metadata-only entry giving it new tags and a content type")
for name, entries, why in [
    ("metadata-only-eleven-tags", [restated(tags={f"k{i}": "v" for i in range(11)})],
     "a metadata-only entry with 11 tags (S3 allows 10)"),
    ("metadata-only-lock-mode", [restated(object_lock_mode="FOREVER", object_lock_retain_until="2031-01-02T03:04:05Z")],
     "a metadata-only entry with an Object Lock mode that is neither GOVERNANCE nor COMPLIANCE"),
    ("metadata-only-crlf", [restated(content_type="text/plain\r\nX-Evil: 1")],
     "a metadata-only entry whose Content-Type has CR/LF"),
    ("metadata-only-twice", [restated(), restated()], "the same key twice among metadata-only entries"),
    ("metadata-only-empty-key", [restated(key="")], "a metadata-only entry with an empty key"),
]:
    save(f"{name}.zip", volume(files, manifest([obj("a.txt", b"a")], metadata_only=entries)), 5, why)

with open(os.path.join(OUT, "expected.json"), "w") as f:
    json.dump(expected, f, indent=1, sort_keys=True)
print(f"{len(expected)} volumes in {OUT}")
