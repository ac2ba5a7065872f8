"""Run a moto server on 127.0.0.1:PORT until standard input closes, so it never outlives the
test process or script that started it. Prints `ready` once it accepts requests.

Standard input also takes one fixture command, for tests that need more objects than HTTP
PUTs can create in reasonable time (the code under test still reads them over HTTP):
  seed-numbered BUCKET N   creates d{i%100}/o{i:06d} with body str(i) for i < N; answers `ok`
  seed-big BUCKET KEY SIZE creates one object of SIZE bytes (a repeating pattern); answers `ok`
"""
import logging
import sys

from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends
from moto.server import ThreadedMotoServer

logging.getLogger("werkzeug").setLevel(logging.ERROR)
port = int(sys.argv[1])
server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
server.start()
print("ready", flush=True)
try:
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["seed-numbered"]:
            backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
            bucket, count = words[1], int(words[2])
            for i in range(count):
                backend.put_object(bucket, f"d{i % 100}/o{i:06d}", str(i).encode())
            print("ok", flush=True)
        elif words[:1] == ["seed-big"]:
            backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
            bucket, key, size = words[1], words[2], int(words[3])
            block = bytes(range(256)) * 4096
            body = (block * (size // len(block) + 1))[:size]
            backend.put_object(bucket, key, body)
            del body
            print("ok", flush=True)
        else:
            print(f"unknown command {line!r}", flush=True)
finally:
    server.stop()
