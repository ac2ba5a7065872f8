"""The benchmark driver (run by scripts/bench.sh): seeded datasets, one S3 server for every tool
on a dataset, and the same task for every tool: from the bucket's current state to a transferable
archive of the objects changed since the last run, in the export bucket. Tools run interleaved,
REPS times each (the seed workflow once: one CLI process per object); medians are reported.

A dataset is NAME or NAME@SERVER. The servers: `s3mem` (scripts/s3mem: in memory, key-sorted,
Rust on the s3s crate; S3MEM names its binary), the headline, whose own cost is small beside the
clients'; `moto` (moto server, in memory, Python) and `s3s-fs` (the file-backed S3 server of the
s3s crate; S3S_FS names its binary), kept to show what they measure: moto's CPU on small objects
and its whole-object reads for ranged GETs, s3s-fs's tree walk for every listing page. DynamoDB is
always moto.

Also: the server's own cost (one listing + parallel GETs of the changed objects + one multipart
PUT of as many bytes, with s5cmd), ferry under a 512 MiB memory limit (cgroup), and `ferry plan`
of 1,000,000 keys against a generated listing and inventory. Writes OUT/results.{md,json} and
OUT/chart.png.
"""
import argparse
import gzip
import hashlib
import http.server
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import logging

import boto3
from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends
from moto.server import ThreadedMotoServer

ROOT = Path(__file__).resolve().parent.parent
FERRY = Path(os.environ.get("FERRY_BIN", ROOT / "target/release/ferry"))
BIN = Path(sys.executable).parent
KiB, MiB = 1024, 1024 * 1024
DATASETS = {
    "small": dict(small=10_000, small_size=16 * KiB, large=0, large_size=0, large_changed=0),
    "large": dict(small=0, small_size=0, large=8, large_size=128 * MiB, large_changed=2),
    "mixed": dict(small=2_000, small_size=16 * KiB, large=4, large_size=64 * MiB, large_changed=1),
    # Ten times `small`: 7,000 changed of 100,000.
    "small10x": dict(small=100_000, small_size=16 * KiB, large=0, large_size=0, large_changed=0),
    # A quick check of the script itself.
    "tiny": dict(small=200, small_size=16 * KiB, large=1, large_size=6 * MiB, large_changed=1),
}
TOOLS = ["ferry", "s5cmd+zip", "rclone+zip", "rclone --fast-list+zip", "boto3+zipfile", "seed workflow"]
# ferry with the trust features on: every volume sealed with age and the bundle signed (a key
# file). Not a peer: its row is compared with plain ferry's (the cost of the protection).
SEALED = "ferry sealed+signed"
# The far side: each stage of the trip after the export, ferry first, then what an operator would
# type instead. Every peer's result is checked (the same files, keys and bytes) before it counts.
FAR = {
    "download": ["ferry download", "aws s3 cp --recursive", "s5cmd cp", "rclone copy"],
    "verify": ["ferry verify", "sha256sum -c", "unzip -t"],
    "import to bucket": ["ferry import", "unzip + aws s3 sync", "unzip + s5cmd sync", "unzip + rclone copy"],
    "import to folder": ["ferry import --to-dir", "unzip -o"],
}
# The sealed+signed bundle imported (age identity, trusted key): compared with plain ferry import.
SEALED_IMPORT = "ferry import sealed+signed"
# The plain bundle imported through a scanner (clamscan with a signature database of its own,
# two scans at once): compared with plain ferry import (what screening every object costs).
SCAN_IMPORT = "ferry import --scan clamscan"
FAR_TOOLS = [f"{stage}: {tool}" for stage, tools in FAR.items() for tool in tools] + [
    f"import to bucket: {SEALED_IMPORT}", f"import to bucket: {SCAN_IMPORT}"]
S3S_FS = Path(os.environ.get("S3S_FS", ROOT / ".tools/bin/s3s-fs"))
S3MEM = Path(os.environ.get("S3MEM", ROOT / "target/tools/release/s3mem"))
# Seconds a generated listing page takes in the plan measurement's second part (S3's own
# ListObjectsV2 pages of 1,000 keys take tens of milliseconds).
LIST_LATENCY = 0.05
SERVERS = {"s3mem": "s3mem 0.1.0 (scripts/s3mem: in memory, key-sorted, Rust on s3s 0.14.1)",
           "moto": "moto 5.2.5 (in memory, Python)", "s3s-fs": "s3s-fs 0.14.1 (files on local disk)"}
# Threads that seed a Rust server (boto3, one PUT each).
SEED_THREADS = 16


def spec_of(name):
    """`large@s3s-fs` → (the `large` dataset, server `s3s-fs`); a plain name runs on moto."""
    base, _, server = name.partition("@")
    server = server or "moto"
    if base not in DATASETS or server not in SERVERS:
        raise SystemExit(f"unknown dataset {name!r}: datasets {sorted(DATASETS)}, servers {sorted(SERVERS)}")
    return DATASETS[base], server


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def say(msg):
    print(f"==> {msg}", file=sys.stderr, flush=True)


class RustServer:
    """s3s-fs serving a fresh directory, or s3mem, on 127.0.0.1 (started on first use)."""

    def __init__(self, work, kind):
        binary = S3S_FS if kind == "s3s-fs" else S3MEM
        if not binary.exists():
            raise SystemExit(f"{binary} is missing: scripts/bench.sh builds it (or set "
                             f"{'S3S_FS' if kind == 's3s-fs' else 'S3MEM'})")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(work / f"{kind}.log", "wb")
        args = [str(binary), "--host", "127.0.0.1", "--port", str(self.port), "--access-key", "bench",
                "--secret-key", "bench"]
        if kind == "s3s-fs":
            root = work / "s3s-fs"
            root.mkdir()
            args.append(str(root))
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "RUST_LOG": "warn"})
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{kind} did not start on {self.url}: see {work / f'{kind}.log'}")
                time.sleep(0.1)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


class Bench:
    def __init__(self, args):
        self.args = args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.env = dict(os.environ)
        self.env.update(
            AWS_ENDPOINT_URL=self.url, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
            AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
            FERRY_S3_PATH_STYLE="true", TZ="UTC", S3_ENDPOINT_URL=self.url,
            RCLONE_CONFIG_BENCH_TYPE="s3", RCLONE_CONFIG_BENCH_PROVIDER="Other",
            RCLONE_CONFIG_BENCH_ENDPOINT=self.url, RCLONE_CONFIG_BENCH_ACCESS_KEY_ID="bench",
            RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY="bench", RCLONE_CONFIG_BENCH_REGION="us-east-1",
            RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE="true",
            PATH=f"{BIN}:{os.environ.get('PATH', '')}",
        )
        self.env.pop("AWS_CA_BUNDLE", None)
        self.work = Path(tempfile.mkdtemp(prefix="ferry-bench-"))
        # aws-cli and the boto3 peer address buckets by path, as every other tool here does.
        aws_config = self.work / "aws-config"
        aws_config.write_text("[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n")
        self.env["AWS_CONFIG_FILE"] = str(aws_config)
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("AWS_")})
        self.ddb = boto3.client("dynamodb")
        self.backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
        self.rust = {}  # started Rust servers by name
        self.results = []
        self.use_server("moto")
        self.run(f"{FERRY} init --table bench", check=True)
        # The keys of the sealed+signed row: an age recipient and a P-256 key file.
        age_key = self.work / "age.key"
        subprocess.run(["age-keygen", "-o", str(age_key)], check=True, capture_output=True)
        self.recipient = subprocess.run(["age-keygen", "-y", str(age_key)], check=True,
                                        capture_output=True, text=True).stdout.strip()
        self.signing_key = self.work / "sign.key"
        self.run(f"{FERRY} keygen --out {self.signing_key}", check=True)

    def use_server(self, server):
        """Point every tool's S3 endpoint at `server` (DynamoDB stays on moto)."""
        if server != "moto" and server not in self.rust:
            self.rust[server] = RustServer(self.work, server)
        url = self.url if server == "moto" else self.rust[server].url
        self.server_name = server
        self.env.update(AWS_ENDPOINT_URL_S3=url, S3_ENDPOINT_URL=url, RCLONE_CONFIG_BENCH_ENDPOINT=url)
        self.s3 = boto3.client("s3", endpoint_url=url)

    @property
    def fs(self):
        """The s3s-fs server (the generator rows forward to it)."""
        return self.rust.get("s3s-fs")

    def put_all(self, bucket, items):
        """PUT every (key, size) with random bytes: straight into moto's backend, else from
        SEED_THREADS threads."""
        if self.server_name == "moto":
            for key, size in items:
                self.put(bucket, key, os.urandom(size))
            return
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(SEED_THREADS) as pool:
            list(pool.map(lambda kv: self.s3.put_object(Bucket=bucket, Key=kv[0], Body=os.urandom(kv[1])),
                          items))

    def put(self, bucket, key, data):
        if self.server_name == "moto":
            self.backend.put_object(bucket, key, data)
        else:
            self.s3.put_object(Bucket=bucket, Key=key, Body=data)

    def delete(self, bucket, key):
        if self.server_name == "moto":
            self.backend.delete_object(bucket, key)
        else:
            self.s3.delete_object(Bucket=bucket, Key=key)

    # -- running and measuring -----------------------------------------------------------
    def run(self, cmd, check=False):
        p = subprocess.run(["bash", "-c", cmd], env=self.env, capture_output=True, text=True)
        if check and p.returncode != 0:
            raise RuntimeError(f"failed ({p.returncode}): {cmd}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        return p

    def server_cpu(self):
        """CPU seconds the S3 server in use has spent so far (moto runs in this process)."""
        if self.server_name == "moto":
            t = os.times()
            return t.user + t.system
        pid = self.rust[self.server_name].proc.pid
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def timed(self, cmd, mark=None):
        """Run `cmd` under /usr/bin/time: wall s, CPU s (user+sys, children included), peak
        RSS (largest process), the time the local archive was ready (if `mark` is written),
        and the server's CPU seconds meanwhile."""
        tfile = self.work / "time.txt"
        server0 = self.server_cpu()
        start = time.monotonic()
        p = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", "-o", str(tfile), "bash", "-c", cmd],
                           env=self.env, capture_output=True, text=True)
        end = time.monotonic()
        if p.returncode != 0:
            raise RuntimeError(f"failed ({p.returncode}): {cmd}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        wall, user, sys_, rss = tfile.read_text().split()[-4:]
        local = None
        if mark and Path(mark).exists():
            local = float(Path(mark).read_text()) - (time.time() - (end - start))
        return dict(wall=float(wall), cpu=float(user) + float(sys_), rss_mib=int(rss) / 1024,
                    local=local, server_cpu=round(self.server_cpu() - server0, 2), stdout=p.stdout)

    # -- data -------------------------------------------------------------------------------
    def seed(self, name, spec):
        src, exp = f"src-{name}", f"exp-{name}"
        for b in (src, exp):
            self.s3.create_bucket(Bucket=b)
        self.put_all(src, [(f"small/{i % 50:02d}/obj{i:06d}.bin", spec["small_size"])
                           for i in range(spec["small"])])
        for i in range(spec["large"]):
            self.put(src, f"large/blob{i:02d}.bin", os.urandom(spec["large_size"]))
        return src, exp

    def change(self, src, spec):
        """5% of the small objects overwritten, 1% deleted, 2% added; some large ones overwritten.
        Returns (objects, bytes) that changed (what every tool must carry)."""
        n = spec["small"]
        keys = [f"small/{i % 50:02d}/obj{i:06d}.bin" for i in range(n)]
        over, gone = keys[: n * 5 // 100], keys[n * 5 // 100: n * 6 // 100]
        objects = bytes_ = 0
        self.put_all(src, [(k, spec["small_size"]) for k in over])
        for k in gone:
            self.delete(src, k)
        self.put_all(src, [(f"small/new/add{i:06d}.bin", spec["small_size"]) for i in range(n * 2 // 100)])
        objects += len(over) + n * 2 // 100
        bytes_ += (len(over) + n * 2 // 100) * spec["small_size"]
        for i in range(spec["large_changed"]):
            self.put(src, f"large/blob{i:02d}.bin", os.urandom(spec["large_size"]))
        objects += spec["large_changed"]
        bytes_ += spec["large_changed"] * spec["large_size"]
        return objects, bytes_

    def clone_state(self, job, to):
        item = self.ddb.get_item(TableName="bench", Key={"job": {"S": job}}, ConsistentRead=True)["Item"]
        item["job"] = {"S": to}
        for k in ("lease_owner", "lease_until"):
            item.pop(k, None)
        self.ddb.put_item(TableName="bench", Item=item)

    def empty(self, bucket, prefix):
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                self.s3.delete_object(Bucket=bucket, Key=o["Key"])

    # -- the tools --------------------------------------------------------------------------
    def command(self, tool, name, src, exp, since, run):
        stage = self.work / f"stage-{run}"
        out = self.work / f"{run}.zip"
        mark = self.work / f"{run}.mark"
        mark_cmd = f"date +%s.%N > {mark}"
        zip_cmd = f"(cd {stage} && zip -q -r -0 {out} .)"
        t_aws = since.strftime("%Y-%m-%d %H:%M:%S")
        t_s5 = since.strftime("%Y/%m/%d %H:%M:%S")
        if tool == "ferry":
            return (f"{FERRY} export --job {run} --source s3://{src} --dest s3://{exp}/ferry "
                    f"--table bench --json"), None
        if tool == SEALED:
            return (f"{FERRY} export --job {run} --source s3://{src} --dest s3://{exp}/ferry "
                    f"--table bench --json --encrypt-to {self.recipient} "
                    f"--signing-key file:{self.signing_key}"), None
        if tool == "seed workflow":
            return (f"set -e; mkdir -p {stage}; "
                    f"aws s3 ls s3://{src} --recursive | awk -v t='{t_aws}' '($1\" \"$2) > t {{print $4}}' > {stage}.list; "
                    f"while IFS= read -r key; do aws s3 cp \"s3://{src}/$key\" \"{stage}/$key\" --only-show-errors; done < {stage}.list; "
                    f"{zip_cmd}; {mark_cmd}; aws s3 cp {out} s3://{exp}/seed/{run}.zip --only-show-errors"), mark
        if tool in ("rclone+zip", "rclone --fast-list+zip"):
            # --fast-list: one recursive listing (as ferry's) instead of one per folder
            fast = " --fast-list" if "fast-list" in tool else ""
            age = int((datetime.now(timezone.utc) - since).total_seconds()) + 1
            return (f"set -e; rclone copy bench:{src} {stage} --max-age {age}s --use-server-modtime{fast} "
                    f"--transfers 16 --checkers 16 --s3-no-check-bucket -q; {zip_cmd}; {mark_cmd}; "
                    f"rclone copyto {out} bench:{exp}/rclone/{run}.zip --s3-no-check-bucket -q"), mark
        if tool == "s5cmd+zip":
            return (f"set -e; mkdir -p {stage}; "
                    f"s5cmd ls 's3://{src}/*' | awk -v t='{t_s5}' '($1\" \"$2) > t {{print \"cp s3://{src}/\" $4 \" {stage}/\" $4}}' > {stage}.cmds; "
                    f"s5cmd run {stage}.cmds > /dev/null; {zip_cmd}; {mark_cmd}; "
                    f"s5cmd cp {out} s3://{exp}/s5cmd/{run}.zip > /dev/null"), mark
        if tool == "boto3+zipfile":
            script = self.work / "boto3_zip.py"
            script.write_text(BOTO3_PEER)
            return (f"{sys.executable} {script} {src} {exp} '{since.isoformat()}' {out} {mark} "
                    f"boto3/{run}.zip"), mark
        raise ValueError(tool)

    def cleanup(self, run, exp):
        shutil.rmtree(self.work / f"stage-{run}", ignore_errors=True)
        for suffix in (".zip", ".mark", ".list", ".cmds"):
            for p in (self.work / f"{run}{suffix}", self.work / f"stage-{run}{suffix}"):
                p.unlink(missing_ok=True)
        for prefix in ("seed/", "rclone/", "s5cmd/", "boto3/", "ceiling/"):
            self.empty(exp, prefix)

    def ceiling(self, src, exp, since, changed_bytes, run):
        """The server's own cost: one listing, parallel GETs of the changed objects, one
        multipart PUT of as many bytes (s5cmd, 64 workers), summed."""
        stage = Path("/dev/shm") / f"ferry-bench-{run}"
        stage.mkdir(parents=True, exist_ok=True)
        t_s5 = since.strftime("%Y/%m/%d %H:%M:%S")
        listing = self.timed(f"s5cmd ls 's3://{src}/*' > {stage}/list")
        cmds = [f"cp s3://{src}/{line.split()[-1]} {stage}/{line.split()[-1]}"
                for line in (stage / "list").read_text().splitlines()
                if " ".join(line.split()[:2]) > t_s5]
        (stage / "cmds").write_text("\n".join(cmds) + "\n")
        gets = self.timed(f"s5cmd --numworkers 64 run {stage}/cmds > /dev/null")
        blob = stage / "blob"
        with open(blob, "wb") as f:
            f.truncate(changed_bytes)
        put = self.timed(f"s5cmd cp --concurrency 8 --part-size 16 {blob} s3://{exp}/ceiling/{run} > /dev/null")
        shutil.rmtree(stage, ignore_errors=True)
        return dict(wall=listing["wall"] + gets["wall"] + put["wall"],
                    cpu=listing["cpu"] + gets["cpu"] + put["cpu"],
                    rss_mib=max(listing["rss_mib"], gets["rss_mib"], put["rss_mib"]), local=None,
                    server_cpu=listing["server_cpu"] + gets["server_cpu"] + put["server_cpu"],
                    parts=dict(list=listing["wall"], gets=gets["wall"], put=put["wall"]))

    # -- one dataset ------------------------------------------------------------------------
    def dataset(self, label):
        spec, server = spec_of(label)
        self.use_server(server)
        name = label.replace("@", "-")  # bucket, job and file names
        say(f"dataset {label} on {server}: seeding")
        src, exp = self.seed(name, spec)
        base = f"{name}-base"
        say(f"dataset {name}: ferry baseline (not measured)")
        self.run(f"{FERRY} export --job {base} --source s3://{src} --dest s3://{exp}/ferry --table bench", check=True)
        reps = self.args.reps
        jobs = ([f"{name}-r{r}" for r in range(reps)] + [f"{name}-s{r}" for r in range(reps)]
                + [f"{name}-limited"])
        for j in jobs:
            self.clone_state(base, j)
        time.sleep(1.2)
        since = datetime.now(timezone.utc).replace(microsecond=0)
        time.sleep(1.2)
        objects, changed = self.change(src, spec)
        say(f"dataset {name}: {objects} changed objects, {changed / MiB:.1f} MiB")
        for r in range(reps):
            for tool in TOOLS + [SEALED, "server ceiling"]:
                if self.args.tools and tool not in self.args.tools:
                    continue
                if tool == "seed workflow" and r > 0 and spec["small"] > 0:
                    continue  # one CLI process per object: once is enough to know
                if tool == "seed workflow" and server != "moto" and spec["small"] > 0:
                    continue  # known from the moto row; minutes per run
                if "fast-list" in tool and server == "s3s-fs":
                    continue  # s3s-fs 0.14 answers rclone's recursive listing with nothing
                run = (f"{name}-r{r}" if tool == "ferry" else f"{name}-s{r}" if tool == SEALED
                       else f"{name}-{tool.split('+')[0].replace(' --', '-').split()[0]}-{r}")
                if tool == "server ceiling":
                    m = self.ceiling(src, exp, since, changed, run)
                else:
                    cmd, mark = self.command(tool, name, src, exp, since, run)
                    m = self.timed(cmd, mark)
                    if tool in ("ferry", SEALED):
                        j = json.loads(m["stdout"])
                        assert j["objects"] == objects, (j["objects"], objects)
                    else:  # what the peer's archive holds (the seed workflow can miss objects)
                        with zipfile.ZipFile(self.work / f"{run}.zip") as z:
                            m["entries"] = sum(1 for i in z.infolist() if not i.is_dir())
                m.pop("stdout", None)
                self.results.append(dict(dataset=label, server=server, tool=tool, rep=r, objects=objects, bytes=changed, **m))
                say(f"  {label} {tool} rep {r}: {m['wall']:.2f}s cpu {m['cpu']:.2f}s rss {m['rss_mib']:.0f} MiB "
                    f"server cpu {m['server_cpu']:.2f}s")
                self.cleanup(run, exp)
        if not self.args.no_far:
            self.far_side(label, server, name, src, exp, objects, changed)
        if not self.args.no_limited:
            self.limited(label, name, src, exp, objects)
        for b in (src, exp):
            self.empty(b, "")
        self.use_server("moto")

    # -- the far side -----------------------------------------------------------------------
    def far_side(self, label, server, name, src, exp, objects, changed):
        """Download, verify and import the bundle ferry's first measured run made (sequence 2 of
        job NAME-r0; the sealed+signed one of NAME-s0), each stage against its peers, REPS times
        interleaved. Imports go into an empty bucket or folder (`--force`: the baseline is not
        there); every result is compared with a reference import before its time counts."""
        seq = f"{2:08d}"
        job, sjob = f"{name}-r0", f"{name}-s0"
        ran = {r["tool"] for r in self.results if r["dataset"] == label}
        if "ferry" not in ran:
            return  # no bundle to carry
        sealed = SEALED in ran
        media = self.work / "far-media"
        shutil.rmtree(media, ignore_errors=True)
        for j in (job, sjob) if sealed else (job,):
            self.run(f"{FERRY} download --from s3://{exp}/ferry --job {j} --sequence 2 --to {media}", check=True)
        bundle, sbundle = media / job / seq, media / sjob / seq
        want_media = tree_digests(bundle)
        ref_dir = self.work / "far-ref"
        shutil.rmtree(ref_dir, ignore_errors=True)
        self.run(f"{FERRY} import {bundle} --to-dir {ref_dir} --force", check=True)
        want = tree_digests(ref_dir, skip=(".ferry/",))
        assert len(want) == objects, (len(want), objects)
        prefix = f"ferry/{job}/{seq}"
        stage_dir = self.work / "far-stage"
        unzip_all = f"for v in {bundle}/*.zip; do unzip -qo \"$v\" -d {stage_dir}; done"
        skip_internal = ("_ferry/", ".ferry/")  # ferry's manifests (peers extract them) and index
        # A signature database that flags none of the dataset's objects: every one is scanned.
        signatures = self.work / "bench.hdb"
        scanning = shutil.which("clamscan") is not None and shutil.which("sigtool") is not None
        if scanning:
            sample = self.work / "bench-sample.bin"
            sample.write_bytes(b"a sample no dataset object matches\n")
            signatures.write_bytes(subprocess.run(["sigtool", "--md5", str(sample)], check=True,
                                                  capture_output=True).stdout)
        extra = ([SEALED_IMPORT] if sealed else []) + ([SCAN_IMPORT] if scanning else [])
        for r in range(self.args.reps):
            for stage, tools in FAR.items():
                for tool in tools + (extra if stage == "import to bucket" else []):
                    full = f"{stage}: {tool}"
                    if self.args.tools and full not in self.args.tools and tool not in self.args.tools:
                        continue
                    out = self.work / f"far-out-{r}"
                    shutil.rmtree(out, ignore_errors=True)
                    shutil.rmtree(stage_dir, ignore_errors=True)
                    out.mkdir()
                    stage_dir.mkdir()
                    dst = f"far-{name}-{r}"
                    state = self.work / f"far-state-{r}.json"
                    # The state file and its key index (FILE.index) go together.
                    for f in (state, state.with_name(state.name + ".index"), state.with_name(state.name + ".lock")):
                        f.unlink(missing_ok=True)
                    if stage == "import to bucket":
                        self.s3.create_bucket(Bucket=dst)
                    cmd = {
                        "ferry download": f"{FERRY} download --from s3://{exp}/ferry --job {job} --sequence 2 --to {out}",
                        # The peers leave out the export's own report (review.html, review.json:
                        # for the near side's officer), as `ferry download` does.
                        "aws s3 cp --recursive": (f"aws s3 cp --recursive s3://{exp}/{prefix}/ {out}/ "
                                                  "--exclude 'review.*' --only-show-errors"),
                        "s5cmd cp": f"s5cmd cp --exclude 'review.*' 's3://{exp}/{prefix}/*' {out}/ > /dev/null",
                        "rclone copy": (f"rclone copy bench:{exp}/{prefix} {out} --transfers 16 --checkers 16 "
                                        "--exclude 'review.*' --s3-no-check-bucket -q"),
                        "ferry verify": f"{FERRY} verify {bundle} > /dev/null",
                        "sha256sum -c": f"cd {bundle} && sha256sum -c --quiet SHA256SUMS",
                        "unzip -t": f"cd {bundle} && for v in *.zip; do unzip -tqq \"$v\" > /dev/null; done",
                        "ferry import": f"{FERRY} import {bundle} --to s3://{dst} --state {state} --force --json",
                        SEALED_IMPORT: (f"{FERRY} import {sbundle} --to s3://{dst} --state {state} --force --json "
                                        f"--identity {self.work / 'age.key'} --trust {self.signing_key}.pub"),
                        SCAN_IMPORT: (f"{FERRY} import {bundle} --to s3://{dst} --state {state} --force --json "
                                      f"--scan \"clamscan --no-summary -d '{signatures}' {{}}\" --scan-concurrency 2"),
                        # (a volume's entries sit under the source bucket's name: that folder is synced)
                        "unzip + aws s3 sync": f"set -e; {unzip_all}; aws s3 sync {stage_dir}/{src} s3://{dst}/ --only-show-errors",
                        "unzip + s5cmd sync": f"set -e; {unzip_all}; s5cmd sync {stage_dir}/{src}/ s3://{dst}/ > /dev/null",
                        "unzip + rclone copy": (f"set -e; {unzip_all}; rclone copy {stage_dir}/{src} bench:{dst} --transfers 16 "
                                                "--checkers 16 --s3-no-check-bucket -q"),
                        "ferry import --to-dir": f"{FERRY} import {bundle} --to-dir {out} --force --json",
                        "unzip -o": f"for v in {bundle}/*.zip; do unzip -qo \"$v\" -d {out}; done",
                    }[tool]
                    m = self.timed(cmd)
                    m.pop("stdout", None)
                    if stage == "download":
                        got = tree_digests(out / job / seq if tool == "ferry download" else out)
                        ok = got == want_media
                    elif stage == "verify":
                        ok, got = True, {}  # a failed check exits non-zero, which `timed` refuses
                    elif stage == "import to bucket":
                        got = self.bucket_digests(dst, skip=skip_internal)
                        ok = got == want
                        self.empty(dst, "")
                        self.s3.delete_bucket(Bucket=dst)
                    else:
                        got = tree_digests(out if tool.startswith("ferry") else out / src, skip=skip_internal)
                        ok = got == want
                    if not ok:
                        diff = sorted(set(got.items()) ^ set((want_media if stage == "download" else want).items()))
                        raise RuntimeError(f"{label} {full}: the result differs from the reference ({len(got)} results): {diff[:6]}; staged {sorted(tree_digests(stage_dir))[:5]}")
                    nbytes = changed if stage.startswith("import") else sum(s for s, _ in want_media.values())
                    self.results.append(dict(dataset=label, server=server, tool=full, stage=stage, rep=r,
                                             objects=objects, bytes=nbytes, **m))
                    say(f"  {label} {full} rep {r}: {m['wall']:.2f}s cpu {m['cpu']:.2f}s rss {m['rss_mib']:.0f} MiB")
        shutil.rmtree(media, ignore_errors=True)
        shutil.rmtree(ref_dir, ignore_errors=True)
        shutil.rmtree(stage_dir, ignore_errors=True)

    def bucket_digests(self, bucket, skip=()):
        out = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for o in page.get("Contents", []):
                if o["Key"].startswith(skip):
                    continue
                h = hashlib.sha256()
                for chunk in self.s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].iter_chunks(1 << 20):
                    h.update(chunk)
                out[o["Key"]] = (o["Size"], h.hexdigest())
        return out

    def limited(self, label, name, src, exp, objects):
        """ferry export inside a 512 MiB memory cgroup (a 512 MB Lambda)."""
        cg = Path("/sys/fs/cgroup/memory/ferry-bench")
        try:
            cg.mkdir(exist_ok=True)
            (cg / "memory.limit_in_bytes").write_text(str(512 * MiB))
        except OSError as e:
            self.results.append(dict(dataset=label, tool="ferry (512 MiB limit)", rep=0, objects=objects,
                                     bytes=0, wall=None, cpu=None, rss_mib=None, local=None,
                                     note=f"cgroup not available: {e}"))
            return
        cmd = (f"echo $$ > {cg}/cgroup.procs && exec {FERRY} export --job {name}-limited "
               f"--source s3://{src} --dest s3://{exp}/ferry --table bench --json")
        try:
            m = self.timed(cmd)
            ok = json.loads(m["stdout"])["objects"] == objects
            note = "completed" if ok else "wrong object count"
        except RuntimeError as e:
            m, note = dict(wall=None, cpu=None, rss_mib=None, local=None), f"failed: {str(e)[:200]}"
        peak = int((cg / "memory.max_usage_in_bytes").read_text()) / MiB
        m.pop("stdout", None)
        self.results.append(dict(dataset=label, tool="ferry (512 MiB limit)", rep=0, objects=objects,
                                 bytes=0, **m, note=f"{note}; cgroup peak {peak:.0f} MiB"))
        say(f"  {label} ferry under 512 MiB: {note}, cgroup peak {peak:.0f} MiB")
        try:
            cg.rmdir()
        except OSError:
            pass

    # -- plan of 1,000,000 keys -------------------------------------------------------------
    def plan_million(self, n):
        """`ferry plan` against a generated listing of n keys and an inventory of the previous
        state (5% modified, 1% deleted, 2% added). S3 is a small generator server; DynamoDB is
        moto. Reports ferry's seconds, CPU and peak RSS: once as one listing stream with no
        delay, then with LIST_LATENCY seconds a page (as S3's own) as one stream and as key
        ranges cut at the inventory's index."""
        say(f"plan of {n:,} keys")
        inv_path = self.work / "inventory.jsonl.gz"
        m_ms = 1_767_225_600_000
        index_keys, records = [], 0
        with gzip.open(inv_path, "wt", compresslevel=1) as f:
            def write(key, size, etag):
                nonlocal records
                f.write(json.dumps({"k": key, "s": size, "e": etag, "m": m_ms, "c": "STANDARD"}) + "\n")
                records += 1
                if records % 1000 == 0:
                    index_keys.append(key)
            for i in range(n):
                if i % 50 == 7:  # 2% added: not in the old inventory
                    continue
                etag = f"{i:032x}" if i % 20 != 3 else f"{i + 1:032x}"  # 5% modified
                write(f"k/{i:08d}", 1000 + i % 5000, etag)
                if i % 100 == 11:  # 1% deleted: in the old inventory only
                    write(f"k/{i:08d}x", 1, "d")
        inventory = inv_path.read_bytes()
        index = json.dumps({"records": records, "every": 1000, "keys": index_keys}).encode()
        self.ddb.put_item(TableName="bench", Item={
            "job": {"S": "million"}, "sequence": {"N": "1"}, "version": {"N": "1"},
            # Under the job's own state prefix at the destination, as ferry writes it (a state
            # without a pin is checked by where its inventory lies).
            "inventory": {"S": "_state/million/inventory.jsonl.gz"}, "bundle_digest": {"S": "x"},
            "watermark": {"S": "2026-01-01T00:00:00Z"}})

        def one(latency, ranges):
            httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), listing_handler(n, inventory, index, latency))
            threading.Thread(target=httpd.serve_forever, daemon=True).start()
            env_save = dict(self.env)
            self.env["AWS_ENDPOINT_URL_S3"] = f"http://127.0.0.1:{httpd.server_address[1]}"
            try:
                m = self.timed(f"{FERRY} plan --job million --source s3://big --dest s3://exp --table bench "
                               f"--list-ranges {ranges} --json")
            finally:
                self.env = env_save
                httpd.shutdown()
            j = json.loads(m.pop("stdout"))
            r = dict(keys=n, wall=m["wall"], cpu=m["cpu"], rss_mib=m["rss_mib"], latency_ms=round(latency * 1000),
                     list_ranges=j.get("list_ranges", 1), listed=j["listed"], modified=j["modified"],
                     added=j["added"], deleted=j["deleted"])
            say(f"  plan: {r}")
            return r

        self.plan = one(0, 1)
        self.plan["ranged"] = [one(LIST_LATENCY, 1), one(LIST_LATENCY, 8)]


    # -- memory in the object count -----------------------------------------------------------
    def scale(self, counts):
        """Baseline exports of a generated bucket of n small objects (n in `counts`), then the
        import of that bundle into a folder: wall, CPU and peak RSS of each, so memory can be
        read against the object count. The source is a generator (listing and GETs of `k/…`
        keys, bodies made from the key); every other request (the export bucket) is passed to
        s3s-fs. DynamoDB is moto."""
        self.use_server("s3s-fs")
        self.s3.create_bucket(Bucket="scale-exp")
        rows = []
        for n in counts:
            say(f"scale: export and import of {n:,} objects")
            httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), generator_handler(n, self.fs.port))
            httpd.daemon_threads = True
            threading.Thread(target=httpd.serve_forever, daemon=True).start()
            env_save = dict(self.env)
            self.env["AWS_ENDPOINT_URL_S3"] = f"http://127.0.0.1:{httpd.server_address[1]}"
            job = f"scale{n}"
            wrap = os.environ.get("SCALE_WRAP", "")  # e.g. a heap profiler
            try:
                m = self.timed(f"{wrap} {FERRY} export --job {job} --source s3://big --dest s3://scale-exp/ferry "
                               f"--table bench --json")
                j = json.loads(m.pop("stdout"))
                assert j["objects"] == n, (j["objects"], n)
                media, out = self.work / "scale-media", self.work / "scale-out"
                for d in (media, out):
                    shutil.rmtree(d, ignore_errors=True)
                self.run(f"{FERRY} download --from s3://scale-exp/ferry --job {job} --sequence 1 --to {media}",
                         check=True)
                i = self.timed(f"{wrap} {FERRY} import {media}/{job}/{1:08d} --to-dir {out} --json")
                i.pop("stdout")
                files = sum(len(f) for _, _, f in os.walk(out / "k"))
                assert files == n, (files, n)
            finally:
                self.env = env_save
                httpd.shutdown()
                httpd.server_close()
            keep = os.environ.get("SCALE_KEEP")  # a folder to keep each bundle in (to profile imports)
            if keep:
                shutil.rmtree(Path(keep) / job, ignore_errors=True)
                shutil.move(str(media), str(Path(keep) / job))
            for d in (media, out):
                shutil.rmtree(d, ignore_errors=True)
            self.empty("scale-exp", f"ferry/{job}/")
            self.empty("scale-exp", f"ferry/_state/{job}/")
            r = dict(objects=n, volumes=len(j["volumes"]), export_wall=m["wall"], export_cpu=m["cpu"],
                     export_rss_mib=m["rss_mib"], import_wall=i["wall"], import_cpu=i["cpu"],
                     import_rss_mib=i["rss_mib"])
            say(f"  scale: {r}")
            rows.append(r)
        self.scale_rows = rows


    def shard_scaling(self, n, counts, get_latency=0.0):
        """Baseline exports of one generated bucket of n small objects with --shards k for each
        k in `counts` (shards in one process, as `ferry export --shards` runs them): wall, CPU,
        peak RSS, volumes. Same generator and servers as `scale`."""
        self.use_server("s3s-fs")
        self.s3.create_bucket(Bucket="scale-exp")
        rows = []
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                generator_handler(n, self.fs.port, get_latency))
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        env_save = dict(self.env)
        self.env["AWS_ENDPOINT_URL_S3"] = f"http://127.0.0.1:{httpd.server_address[1]}"
        ms = round(get_latency * 1000)
        try:
            for k in counts:
                say(f"shards: export of {n:,} objects in {k} shard(s), GET latency {ms} ms")
                job = f"shards{k}l{ms}"
                m = self.timed(f"{FERRY} export --job {job} --source s3://big --dest s3://scale-exp/ferry "
                               f"--table bench --shards {k} --json")
                j = json.loads(m.pop("stdout"))
                assert j["objects"] == n and j["shards"] == k, (j["objects"], j["shards"])
                self.empty("scale-exp", f"ferry/{job}/")
                self.empty("scale-exp", f"ferry/_state/{job}/")
                r = dict(objects=n, shards=k, get_latency_ms=ms, volumes=len(j["volumes"]), wall=m["wall"],
                         cpu=m["cpu"], rss_mib=m["rss_mib"])
                say(f"  shards: {r}")
                rows.append(r)
        finally:
            self.env = env_save
            httpd.shutdown()
            httpd.server_close()
        self.shard_rows = getattr(self, "shard_rows", []) + rows


def tree_digests(root, skip=()):
    """relative path → (size, SHA-256) of every file under `root`, but those under `skip`."""
    out = {}
    root = Path(root)
    for p in root.rglob("*"):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not rel.startswith(skip):
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            out[rel] = (p.stat().st_size, h.hexdigest())
    return out


def list_page(n, q, etag, size):
    """One ListObjectsV2 page (1,000 keys, url-encoded) of a generated bucket `big` of n keys
    `k/00000000`…, from the query `q` (continuation token or StartAfter); `etag(i)` and `size(i)`
    describe key i."""
    import bisect
    if "continuation-token" in q:
        start = int(q["continuation-token"][0])
    else:
        after = q.get("start-after", [""])[0]
        start = bisect.bisect_right(range(n), after, key=lambda i: f"k/{i:08d}")
    end = min(start + 1000, n)
    items = "".join(
        f"<Contents><Key>k%2F{i:08d}</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified>"
        f"<ETag>&quot;{etag(i)}&quot;</ETag><Size>{size(i)}</Size>"
        f"<StorageClass>STANDARD</StorageClass></Contents>" for i in range(start, end))
    more = end < n
    return ('<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Name>big</Name><Prefix></Prefix><KeyCount>{end - start}</KeyCount><MaxKeys>1000</MaxKeys>"
            f"<EncodingType>url</EncodingType><IsTruncated>{'true' if more else 'false'}</IsTruncated>{items}"
            + (f"<NextContinuationToken>{end}</NextContinuationToken>" if more else "")
            + "</ListBucketResult>").encode()


def generator_handler(n, fs_port, get_latency=0.0):
    """A generated bucket `big` of n small objects (`k/00000000`…, 64–127 bytes made from the
    key, real MD5 ETags) that answers ListObjectsV2 (continuation token and StartAfter), GET and
    HEAD; every other request is passed as it is (signature and all) to s3s-fs on `fs_port`."""
    import http.client

    def body_of(i):
        key = f"k/{i:08d}".encode()
        return (key * 16)[:64 + i % 64]

    stamp = "Thu, 01 Jan 2026 00:00:00 GMT"

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes

        def log_message(self, *a):
            pass

        def reply(self, status, headers, body, send_body=True):
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def generated(self, send_body):
            u = urllib.parse.urlparse(self.path)
            q = urllib.parse.parse_qs(u.query)
            if u.path in ("/big", "/big/") and "list-type" in q:
                body = list_page(n, q, lambda i: hashlib.md5(body_of(i)).hexdigest(), lambda i: 64 + i % 64)
                return self.reply(200, [("Content-Type", "application/xml")], body)
            if u.path in ("/big", "/big/"):
                return self.reply(200, [("Content-Type", "application/xml")], b"", send_body)
            key = urllib.parse.unquote(u.path[len("/big/"):])
            try:
                i = int(key[2:]) if key.startswith("k/") and len(key) == 10 else -1
            except ValueError:
                i = -1
            if not 0 <= i < n:
                return self.reply(404, [("Content-Type", "application/xml")],
                                  b"<Error><Code>NoSuchKey</Code></Error>", send_body)
            if get_latency:
                time.sleep(get_latency)  # S3's time to first byte, modelled
            data = body_of(i)
            headers = [("ETag", f'"{hashlib.md5(data).hexdigest()}"'), ("Last-Modified", stamp),
                       ("Content-Type", "application/octet-stream")]
            if not send_body:
                self.send_response(200)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                return
            self.reply(200, headers, data)

        def forward(self):
            length = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(length) if length else None
            c = http.client.HTTPConnection("127.0.0.1", fs_port, timeout=300)
            try:
                c.request(self.command, self.path, body=data, headers=dict(self.headers.items()))
                r = c.getresponse()
                body = r.read()
                headers = [(k, v) for k, v in r.getheaders()
                           if k.lower() not in ("content-length", "transfer-encoding", "connection")]
                self.reply(r.status, headers, body, self.command != "HEAD")
            finally:
                c.close()

        def route(self, send_body=True):
            if self.path.startswith(("/big/", "/big?")) or self.path == "/big":
                self.generated(send_body)
            else:
                self.forward()

        def do_GET(self):
            self.route()

        def do_HEAD(self):
            self.route(send_body=False)

        def do_PUT(self):
            self.forward()

        def do_POST(self):
            self.forward()

        def do_DELETE(self):
            self.forward()

    return Handler


def listing_handler(n, inventory, index, latency):
    """A generated bucket of n keys (`k/00000000`…) that answers ListObjectsV2 (continuation
    token and StartAfter) after `latency` seconds a page, and serves the inventory and its
    index."""
    docs = {"/inventory.jsonl.gz": (inventory, "application/octet-stream"),
            "/inventory.index.json": (index, "application/json")}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def doc(self, path):
            return next((d for suffix, d in docs.items() if path.endswith(suffix)), None)

        def do_HEAD(self):
            d = self.doc(urllib.parse.urlparse(self.path).path)
            self.send_response(200 if d else 404)
            self.send_header("Content-Length", str(len(d[0]) if d else 0))
            self.send_header("ETag", '"doc"')
            self.end_headers()

        def do_GET(self):
            u = urllib.parse.urlparse(self.path)
            q = urllib.parse.parse_qs(u.query)
            if "list-type" in q:
                time.sleep(latency)
                body = list_page(n, q, lambda i: f"{i:032x}", lambda i: 1000 + i % 5000)
                self.send_response(200)
                self.send_header("Content-Type", "application/xml")
            elif self.doc(u.path):
                body, ctype = self.doc(u.path)
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("ETag", '"doc"')
            else:
                body = b"<Error><Code>NoSuchKey</Code></Error>"
                self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


BOTO3_PEER = '''
import sys, time, zipfile, datetime
import boto3
src, exp, since, out, mark, key = sys.argv[1:]
since = datetime.datetime.fromisoformat(since)
s3 = boto3.client("s3")
with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=src):
        for o in page.get("Contents", []):
            if o["LastModified"] > since:
                z.writestr(o["Key"], s3.get_object(Bucket=src, Key=o["Key"])["Body"].read())
open(mark, "w").write(repr(time.time()))
s3.upload_file(out, exp, key)
'''


def machine():
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
    mem = next((int(l.split()[1]) // 1024 // 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    ver = lambda c: subprocess.run(["bash", "-c", c], capture_output=True, text=True).stdout.strip().splitlines()[0]
    return dict(cpu=model, cores=os.cpu_count(), mem_gib=mem, kernel=platform.release(),
                ferry=ver(f"{FERRY} --version"), rclone=ver("rclone version"), s5cmd=ver(f"{BIN}/s5cmd version"),
                aws=ver(f"{BIN}/aws --version 2>&1"), moto="5.2.5")


def median(rows, field):
    vals = [r[field] for r in rows if r.get(field) is not None]
    return statistics.median(vals) if vals else None


# Rows that measure a server's weakness rather than the tools: shown, counted for no target.
SERVER_BOUND = {
    "moto": "moto's own CPU is most of every small-object row (see the server CPU column) and it reads "
            "the whole object for every ranged GET; NAME@s3mem is the headline",
    "s3s-fs": "s3s-fs 0.14 walks the whole tree for every page of a recursive listing and answers "
              "rclone's recursive listing with nothing; NAME@s3mem is the headline",
}


def server_bound(name):
    base, _, server = name.partition("@")
    return SERVER_BOUND.get(server or "moto")


def headline(name):
    return server_bound(name) is None


def shown(name):
    return name if headline(name) else f"{name} †"


def far_targets(summary, name):
    """The far side's targets of one dataset, as (target, measured, met)."""
    out = []
    w = lambda tool: summary.get((name, tool), {}).get("wall")
    fd, fv, fi, fdir = (w("download: ferry download"), w("verify: ferry verify"),
                        w("import to bucket: ferry import"), w("import to folder: ferry import --to-dir"))
    peers = [(t, w(f"download: {t}")) for t in FAR["download"][1:] if w(f"download: {t}")]
    if fd and peers:
        t, pw = min(peers, key=lambda p: p[1])
        out.append((f"{name}: download at least as fast as the fastest peer",
                    f"fastest peer {t}: {pw:.2f} s; ferry {fd:.2f} s ({pw / fd:.2f}× ferry's speed)", fd <= pw))
    if fv and w("verify: sha256sum -c"):
        r = fv / w("verify: sha256sum -c")
        out.append((f"{name}: verify within 1.3× of sha256sum -c", f"{r:.2f}× ({fv:.2f} s vs {w('verify: sha256sum -c'):.2f} s)", r <= 1.3))
    peers = [(t, w(f"import to bucket: {t}")) for t in FAR["import to bucket"][1:] if w(f"import to bucket: {t}")]
    if fi and peers:
        t, pw = min(peers, key=lambda p: p[1])
        out.append((f"{name}: import to a bucket faster than every unzip+sync peer",
                    f"fastest peer {t}: {pw:.2f} s; ferry {fi:.2f} s ({pw / fi:.2f}×)", fi < pw))
    if fdir and w("import to folder: unzip -o"):
        r = fdir / w("import to folder: unzip -o")
        out.append((f"{name}: import to a folder within 1.5× of unzip -o",
                    f"{r:.2f}× ({fdir:.2f} s vs {w('import to folder: unzip -o'):.2f} s)", r <= 1.5))
    ws = w(f"import to bucket: {SEALED_IMPORT}")
    if fi and ws:
        over = ws / fi - 1
        out.append((f"{name}: opening (age) and checking the signature add ≤ 5% to the import",
                    f"{over * 100:+.1f}% wall ({ws:.2f} s vs {fi:.2f} s)", over <= 0.05))
    wc = w(f"import to bucket: {SCAN_IMPORT}")
    if fi and wc:
        # A clamscan process per object (it loads its database each time, ~20 ms) dominates:
        # the bound is 5× the plain import (measured 3.7× on `mixed`, moto, 2 cores).
        out.append((f"{name}: the import with --scan (clamscan, 2 at once) within 5× of the plain import",
                    f"{wc / fi:.2f}× ({wc:.2f} s vs {fi:.2f} s)", wc <= 5 * fi))
    return out


def trip_chart(summary, name, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    stages = [("export", ["ferry"] + TOOLS[1:], lambda t: t)] + [
        (stage, tools + ([SEALED_IMPORT, SCAN_IMPORT] if stage == "import to bucket" else []), lambda t, s=stage: f"{s}: {t}")
        for stage, tools in FAR.items()]
    fig, ax = plt.subplots(figsize=(11, 5.5))
    x = 0
    ticks, groups = [], []
    for stage, tools, key in stages:
        start = x
        for tool in tools:
            s = summary.get((name, key(tool)))
            if not s:
                continue
            bar = ax.bar([x], [s["wall"]], 0.8, color="tab:blue" if tool.startswith("ferry") else "tab:gray")
            ax.bar_label(bar, fmt="%.2f", fontsize=7)
            ticks.append((x, tool))
            x += 1
        if x > start:
            groups.append(((start + x - 1) / 2, stage))
        x += 1
    ax.set_xticks([p for p, _ in ticks], [l for _, l in ticks], rotation=40, ha="right", fontsize=7)
    for pos, stage in groups:
        ax.text(pos, 1.02, stage, transform=ax.get_xaxis_transform(), ha="center", fontsize=9, weight="bold")
    ax.set_yscale("log")
    ax.set_ylabel("wall seconds (log scale, lower is better)")
    ax.set_title(f"The whole trip, {shown(name)}: ferry (blue) and each stage's peers (grey), 2 cores",
                 pad=22, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(b, out, info=None):
    out.mkdir(parents=True, exist_ok=True)
    info = info or machine()
    summary = {}
    for name in b.args.datasets:
        for tool in TOOLS + [SEALED, "server ceiling"] + FAR_TOOLS:
            rows = [r for r in b.results if r["dataset"] == name and r["tool"] == tool]
            if rows:
                summary[(name, tool)] = dict(
                    wall=median(rows, "wall"), cpu=median(rows, "cpu"), rss=max(r["rss_mib"] for r in rows),
                    local=median(rows, "local"), runs=len(rows), objects=rows[0]["objects"], bytes=rows[0]["bytes"],
                    server_cpu=median(rows, "server_cpu"))
    lines = ["# s3-ferry benchmark", "",
             f"Command: `REPS={b.args.reps} scripts/bench.sh` ({datetime.now(timezone.utc):%Y-%m-%d}). "
             f"Machine: {info['cpu']}, {info['cores']} cores, {info['mem_gib']} GiB RAM, Linux {info['kernel']}. "
             "Servers, on 127.0.0.1, one for every tool on a dataset: "
             + "; ".join(f"`{k}` = {v}" for k, v in SERVERS.items())
             + ". A dataset named `NAME@SERVER` ran on that server, a plain `NAME` on moto; DynamoDB is always moto. "
             f"Tools: {info['ferry']}; "
             f"{info['s5cmd']}; {info['rclone']}; {info['aws']}; boto3 from the same venv.", "",
             *([b.args.note, ""] if getattr(b.args, "note", None) else []),
             "Task, the same for every tool: from the bucket's current state to one archive of the objects "
             "changed since the last run, in the export bucket. The change: 5% of the small objects overwritten, "
             "1% deleted, 2% added; large objects overwritten as listed. ferry also carries the deletions "
             "(the others cannot). Medians of the runs; `to local zip` is when a peer's archive was complete on "
             "local disk, before its upload (ferry never writes one: it streams into the bucket); `server CPU s` is what the S3 server spent meanwhile.", "",
             "| dataset | tool | changed | wall s | to local zip s | MB/s | objects/s | CPU s | peak RSS MiB | server CPU s | runs |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (name, tool), s in summary.items():
        if tool in FAR_TOOLS:
            continue
        mbs = s["bytes"] / 1e6 / s["wall"] if s["wall"] else 0
        local = "" if s["local"] is None else "%.2f" % s["local"]
        lines.append(f"| {shown(name)} | {tool} | {s['objects']} obj, {s['bytes'] / MiB:.1f} MiB | {s['wall']:.2f} | "
                     f"{local} | {mbs:.1f} | {s['objects'] / s['wall']:.0f} | "
                     f"{s['cpu']:.2f} | {s['rss']:.0f} | {'' if s['server_cpu'] is None else '%.2f' % s['server_cpu']} | {s['runs']} |")
    far = [(k, s) for k, s in summary.items() if k[1] in FAR_TOOLS]
    if far:
        lines += ["", "## The far side: download, verify, import", "",
                  "The bundle of ferry's first measured export (the sealed+signed one for its own row), "
                  "fetched onto local disk, checked, and replayed into an empty bucket or folder, against what "
                  "an operator would type instead. Peers unzip first, then sync; they carry neither deletions "
                  "nor moves, and `aws s3 sync`/`s5cmd sync`/`rclone copy` drop the objects' headers and "
                  "metadata (ferry restores them), and upload ferry's `_ferry/manifest.json` entries as objects. "
                  "Every result was compared (paths or keys, sizes, SHA-256) with a reference import before its "
                  "time counted. MB/s counts the bundle's bytes for download and verify, the objects' bytes "
                  "for imports.", "",
                  "| dataset | stage: tool | wall s | MB/s | objects/s | CPU s | peak RSS MiB | server CPU s | runs |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for (name, tool), s in far:
            mbs = s["bytes"] / 1e6 / s["wall"] if s["wall"] else 0
            lines.append(f"| {shown(name)} | {tool} | {s['wall']:.2f} | {mbs:.1f} | {s['objects'] / s['wall']:.0f} | "
                         f"{s['cpu']:.2f} | {s['rss']:.0f} | "
                         f"{'' if s['server_cpu'] is None else '%.2f' % s['server_cpu']} | {s['runs']} |")
    short = sorted({(r["dataset"], r["tool"], r["entries"]) for r in b.results
                    if r.get("entries") is not None and r["entries"] != r["objects"]})
    if short:
        lines += ["", "Archives that did not hold every changed object: " + "; ".join(
            f"{d} {t}: {e} entries" for d, t, e in short) + "."]
    marked = [n for n in b.args.datasets if not headline(n)]
    if marked:
        lines += ["", "† No target counts on this row: " + "; ".join(
            f"{n}: {server_bound(n)}" for n in marked) + "."]
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    targets = []
    for name in b.args.datasets:
        if not headline(name):
            continue
        targets += far_targets(summary, name)
        f = summary.get((name, "ferry"))
        if not f:
            continue
        peers = {t: summary[(name, t)]["wall"] / f["wall"] for t in TOOLS[1:] if (name, t) in summary}
        if peers:
            worst = min(peers.items(), key=lambda kv: kv[1])
            targets.append((f"{name}: faster than every peer", f"closest peer: {worst[0]} takes {worst[1]:.2f}× ferry's time", worst[1] > 1))
        fast = summary.get((name, "rclone --fast-list+zip"))
        if name.split("@")[0].startswith("small"):
            us = f["cpu"] / f["objects"] * 1e6
            for peer in ("rclone --fast-list+zip", "s5cmd+zip"):
                p = summary.get((name, peer))
                if not p:
                    continue
                r = p["wall"] / f["wall"]
                targets.append((f"{name}: ≥ 1.3× ahead of {peer}", f"{r:.2f}× "
                                f"({p['wall']:.2f} s vs {f['wall']:.2f} s; ferry {f['objects'] / f['wall']:.0f} "
                                f"objects/s, {us:.0f} µs CPU per object; server CPU during ferry's run "
                                f"{f['server_cpu']:.2f} s)", r >= 1.3))
        sealed = summary.get((name, SEALED))
        if sealed:
            over = sealed["wall"] / f["wall"] - 1
            targets.append((f"{name}: sealing (age) and signing add ≤ 5% to the export",
                            f"{over * 100:+.1f}% wall ({sealed['wall']:.2f} s vs {f['wall']:.2f} s), "
                            f"CPU {sealed['cpu']:.2f} s vs {f['cpu']:.2f} s", over <= 0.05))
        c = summary.get((name, "server ceiling"))
        if c:
            ratio = c["wall"] / f["wall"]
            small = name.split("@")[0] == "small"
            targets.append((f"{name}: server's own cost / ferry wall {'≥ 90%' if small else '> 100%'}",
                            f"{ratio * 100:.0f}%", ratio >= 0.9 if small else ratio > 1.0))
        parts = [r["parts"] for r in b.results
                 if r["dataset"] == name and r["tool"] == "server ceiling" and r.get("parts")]
        if parts:
            # Listing overlapped with transfer: ferry's wall against the longer of the two
            # halves of the server's own cost (medians over the runs).
            m = {k: statistics.median(p[k] for p in parts) for k in ("list", "gets", "put")}
            bound = max(m["list"], m["gets"] + m["put"])
            r = f["wall"] / bound
            targets.append((f"{name}: export wall ≤ 1.15 × max(list, GETs + PUT)",
                            f"{r:.2f}× ({f['wall']:.2f} s vs max({m['list']:.2f}, {m['gets']:.2f} + "
                            f"{m['put']:.2f}) s)", r <= 1.15))
        if name.split("@")[0] == "small" and (name, "seed workflow") in summary:
            r = summary[(name, "seed workflow")]["wall"] / f["wall"]
            targets.append(("small: ≥ 50× the seed workflow", f"{r:.0f}×", r >= 50))
    ferry_rows = {(n, t): s for (n, t), s in summary.items() if t.split(": ")[-1].startswith("ferry")}
    if ferry_rows:
        (rn, rt), rs = max(ferry_rows.items(), key=lambda kv: kv[1]["rss"])
        targets.append(("peak RSS ≤ 256 MiB (every ferry row, all datasets)",
                        f"{rs['rss']:.0f} MiB ({shown(rn)}, {rt})", rs["rss"] <= 256))
    for r in b.results:
        if r["tool"] == "ferry (512 MiB limit)":
            targets.append((f"{r['dataset']}: completes under a 512 MiB memory limit", r["note"], r["note"].startswith("completed")))
    if getattr(b, "plan", None):
        p = b.plan
        targets.append((f"plan (list + diff) of {p['keys']:,} keys: < 60 s CPU",
                        f"{p['wall']:.1f} s wall, {p['cpu']:.1f} s CPU, {p['rss_mib']:.0f} MiB RSS "
                        f"({p['modified']:,} modified, {p['added']:,} added, {p['deleted']:,} deleted)", p["cpu"] < 60))
        ranged = p.get("ranged") or []
        if len(ranged) == 2 and all(r["listed"] == p["listed"] and r["deleted"] == p["deleted"] for r in ranged):
            one, many = ranged
            targets.append((f"plan of {p['keys']:,} keys at {one['latency_ms']} ms a listing page: key ranges "
                            "listed at once beat one stream",
                            f"{many['list_ranges']} ranges {many['wall']:.1f} s vs one stream {one['wall']:.1f} s "
                            f"({one['wall'] / many['wall']:.1f}×; same counts; RSS {many['rss_mib']:.0f} vs "
                            f"{one['rss_mib']:.0f} MiB)", many["wall"] < one["wall"]))
        elif ranged:
            targets.append(("plan as key ranges: the same counts as one stream", "counts differ", False))
    scale = getattr(b, "scale_rows", None) or []
    if scale:
        worst = max(max(r["export_rss_mib"], r["import_rss_mib"]) for r in scale)
        targets.append(("peak RSS ≤ 256 MiB at any object count (export and import of "
                        + ", ".join(f"{r['objects']:,}" for r in scale) + " objects)",
                        f"largest {worst:.0f} MiB", worst <= 256))
    shard_rows = getattr(b, "shard_rows", None) or []
    for t, m, ok in targets:
        lines.append(f"| {t} | {m} | {'yes' if ok else 'no'} |")
    for ms in sorted({r.get("get_latency_ms", 0) for r in shard_rows}):
        rows = [r for r in shard_rows if r.get("get_latency_ms", 0) == ms]
        base = rows[0]["wall"]
        lines += ["", f"## Shards ({'no GET latency' if not ms else f'{ms} ms a GET'})", "",
                  f"Baseline export of {rows[0]['objects']:,} generated small objects with `--shards N` (the "
                  "shards run in one process on this machine's cores; the generator and s3s-fs share them"
                  + (f"; every GET waits {ms} ms before its first byte, as S3's do" if ms else "") + "):", "",
                  "| shards | volumes | wall s | speed-up | CPU s | peak RSS MiB | RSS per shard MiB |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['shards']} | {r['volumes']} | {r['wall']:.1f} | {base / r['wall']:.2f}× | {r['cpu']:.1f} | "
                  f"{r['rss_mib']:.0f} | {r['rss_mib'] / r['shards']:.0f} |" for r in rows]
    if scale:
        lines += ["", "## Memory in the object count", "",
                  "Baseline export of a generated bucket of small objects (64–127 bytes; listing and GETs from a "
                  "generator, the export bucket on s3s-fs), then `ferry import --to-dir` of that bundle:", "",
                  "| objects | volumes | export wall s | export CPU s | export peak RSS MiB | import wall s | "
                  "import CPU s | import peak RSS MiB |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['objects']:,} | {r['volumes']} | {r['export_wall']:.1f} | {r['export_cpu']:.1f} | "
                  f"{r['export_rss_mib']:.0f} | {r['import_wall']:.1f} | {r['import_cpu']:.1f} | "
                  f"{r['import_rss_mib']:.0f} |" for r in scale]
    ceil = [(n, next(r["parts"] for r in b.results if r["dataset"] == n and r["tool"] == "server ceiling"))
            for n in b.args.datasets if any(r["dataset"] == n and r["tool"] == "server ceiling" for r in b.results)]
    lines += ["", "Server's own cost, split (first run): " + "; ".join(
        f"{n}: list {p['list']:.2f} s + GETs {p['gets']:.2f} s + PUT {p['put']:.2f} s" for n, p in ceil), "",
        "![wall time per tool](chart.png)", ""]
    trips = [n for n in b.args.datasets if any((n, t) in summary for t in FAR_TOOLS)]
    if trips:
        lines += ["## The whole trip", "", "Export → download → verify → import, per dataset: ferry against each "
                  "stage's peers (wall seconds, medians, log scale).", ""]
        for n in trips:
            png = f"trip-{n.replace('@', '-')}.png"
            trip_chart(summary, n, out / png)
            lines += [f"![{shown(n)}: the whole trip]({png})", ""]
    lines += sizing(summary)
    (out / "results.md").write_text("\n".join(lines))
    (out / "results.json").write_text(json.dumps(dict(machine=info, runs=b.results, plan=getattr(b, "plan", None),
                                                      scale=scale, shards=shard_rows), indent=1))
    if summary:
        chart(summary, b.args.datasets, out / "chart.png")
    print("\n".join(lines))


# Lambda's network, assumed (not measured here): third-party measurements of S3 throughput
# from one invocation grow with memory and level off around 100 MB/s.
ASSUMED_MBPS = {1024: 70, 2048: 90, 4096: 110}
LAMBDA_WORK_S = 900 - 90  # one invocation's working time (15 min less the deadline margin)


def sizing(summary):
    f = summary.get(("large", "ferry"))
    if not f:
        return []
    cpu_per_gb = f["cpu"] / (f["bytes"] / 2**30)
    lines = ["", "## Lambda sizing (from these measurements)", "",
             f"ferry spent {cpu_per_gb:.1f} CPU seconds per GiB shipped (large dataset, hashing, zip framing, "
             "TLS-free HTTP to moto; real S3 adds TLS). A Lambda gets one vCPU per 1,769 MB; the hashing of a "
             "volume runs on one core, so at most one vCPU counts. S3 throughput of one invocation is an "
             "assumption, not measured here: " + ", ".join(f"{m // 1024} GB: {v} MB/s" for m, v in ASSUMED_MBPS.items())
             + " (third-party measurements of Lambda↔S3 transfers level off near 100 MB/s). Every byte is read "
             "and written once, so the network carries twice the delta. Time = max(network, CPU); a hop is "
             f"{LAMBDA_WORK_S} s of work.", "",
             "| monthly delta | 1 GB Lambda | 2 GB Lambda | 4 GB Lambda |", "|---|---|---|---|"]
    for gb in (1, 10, 100):
        cells = []
        for mem, mbps in ASSUMED_MBPS.items():
            net = 2 * gb * 1000 / mbps
            cpu = cpu_per_gb * gb / min(mem / 1769, 1.0)
            t = max(net, cpu)
            hops = int(-(-t // LAMBDA_WORK_S))
            cells.append(f"{t / 60:.0f} min, {hops} hop{'s' if hops > 1 else ''}" if t >= 60 else f"{t:.0f} s, 1 hop")
        lines.append(f"| {gb} GB | " + " | ".join(cells) + " |")
    return lines


def chart(summary, datasets, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tools = TOOLS + [SEALED, "server ceiling"]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(tools)
    for i, tool in enumerate(tools):
        xs, ys = [], []
        for d, name in enumerate(datasets):
            s = summary.get((name, tool))
            if s:
                xs.append(d + i * width)
                ys.append(s["wall"])
        bars = ax.bar(xs, ys, width, label=tool)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks([d + 0.4 - width / 2 for d in range(len(datasets))], datasets)
    ax.set_yscale("log")
    ax.set_ylabel("wall seconds (log scale, lower is better)")
    ax.set_title("Changed objects → archive in the export bucket (2 cores; NAME@SERVER on that server, others on moto)")
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--datasets", default="small@s3mem,small10x@s3mem,large@s3mem,mixed@s3mem,small,large@s3s-fs")
    ap.add_argument("--plan-keys", type=int, default=1_000_000)
    ap.add_argument("--scale-objects", default="200000,1000000,2000000",
                    help="object counts of the memory-in-the-object-count runs (empty: skip)")
    ap.add_argument("--shard-objects", type=int, default=200000,
                    help="objects of the shard-scaling runs (0: skip)")
    ap.add_argument("--shard-counts", default="1,2,4,8", help="shard counts of the shard-scaling runs")
    ap.add_argument("--shard-latency-objects", type=int, default=50000,
                    help="objects of the shard-scaling runs with GET latency (0: skip)")
    ap.add_argument("--shard-get-latency-ms", type=float, default=15.0,
                    help="time to first byte of every generated GET in those runs")
    ap.add_argument("--tools", default="", help="only these tools, comma-separated (quick checks)")
    ap.add_argument("--no-limited", action="store_true", help="skip the 512 MiB cgroup run")
    ap.add_argument("--no-far", action="store_true", help="skip the far side (download, verify, import)")
    ap.add_argument("--out", default="docs/bench")
    ap.add_argument("--report", help="rewrite the report from this results.json (no runs)")
    ap.add_argument("--note", help="a line added to the report (e.g. how its runs were made)")
    args = ap.parse_args()
    args.datasets = [d for d in args.datasets.split(",") if d]
    args.tools = [t for t in args.tools.split(",") if t]
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        b = argparse.Namespace(args=args, results=saved["runs"], plan=saved["plan"], scale_rows=saved.get("scale"),
                               shard_rows=saved.get("shards"))
        report(b, ROOT / args.out, saved["machine"])
        return
    for d in args.datasets:
        spec_of(d)
    b = Bench(args)
    try:
        for name in args.datasets:
            b.dataset(name)
            # what was measured so far survives a later failure (rewrite with --report)
            (b.work.parent / "ferry-bench-partial.json").write_text(
                json.dumps(dict(machine=machine(), runs=b.results, plan=None), indent=1))
        if args.plan_keys:
            b.plan_million(args.plan_keys)
        scale = [int(n) for n in args.scale_objects.split(",") if n]
        if scale:
            b.scale(scale)
        shards = [int(k) for k in args.shard_counts.split(",") if k]
        if args.shard_objects and shards:
            b.shard_scaling(args.shard_objects, shards)
        if args.shard_latency_objects and shards:
            b.shard_scaling(args.shard_latency_objects, shards, args.shard_get_latency_ms / 1000)
        report(b, ROOT / args.out)
    finally:
        b.server.stop()
        for server in b.rust.values():
            server.stop()
        shutil.rmtree(b.work, ignore_errors=True)


if __name__ == "__main__":
    main()
