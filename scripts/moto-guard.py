"""Run a moto server on 127.0.0.1:PORT until standard input closes, so it never outlives the
test process or script that started it. Prints `ready` once it accepts requests.

Standard input also takes one fixture command, for tests that need more objects than HTTP
PUTs can create in reasonable time (the code under test still reads them over HTTP):
  seed-numbered BUCKET N   creates d{i%100}/o{i:06d} with body str(i) for i < N; answers `ok`
  seed-big BUCKET KEY SIZE creates one object of SIZE bytes (a repeating pattern); answers `ok`

`moto-guard.py --zygote SOCKET` instead imports moto once and listens on the Unix socket
SOCKET: each connection gets a fresh server of its own, forked from that process with moto
already imported (a start costs milliseconds instead of ~1.5 CPU seconds of imports). The child
picks a free port, answers `ready PORT` on the connection, takes the same commands from it, and
ends when the connection closes. The zygote ends when its standard input closes
(scripts/test.sh starts one for the whole test run; tests/util.rs uses it through
FERRY_MOTO_ZYGOTE).

Either way, DynamoDB requests are served one at a time. Real DynamoDB applies each write to an
item atomically (an UpdateItem's `SET n = if_not_exists(n, :b) + :one` hands every caller its
own number; of two conditional writes one fails). moto reads, computes and stores without a
lock, so two shards of one run that claim a volume number at the same moment could both get it
(seen once in scripts/lambda-e2e.sh: "volume 1 is in two shards' documents"). Serializing
DynamoDB's handler makes moto keep the guarantee the code relies on; races of our own code are
tested deterministically on the in-memory stores, not through moto's timing.
"""
import logging
import os
import socket
import sys
import threading

from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends
from moto.server import ThreadedMotoServer

logging.getLogger("werkzeug").setLevel(logging.ERROR)


def serialize_dynamodb():
    """Serve moto's DynamoDB requests one at a time (see the module's documentation)."""
    from moto.dynamodb.responses import DynamoHandler

    if getattr(DynamoHandler.call_action, "serialized", False):
        return
    lock = threading.Lock()
    inner = DynamoHandler.call_action

    def call_action(self):
        with lock:
            return inner(self)

    call_action.serialized = True
    DynamoHandler.call_action = call_action


def serve(port, commands, answer):
    """A moto server on `port` until `commands` ends; fixture commands answered on `answer`."""
    serialize_dynamodb()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    answer("ready" if commands is sys.stdin else f"ready {port}")
    try:
        for line in commands:
            words = line.split()
            if words[:1] == ["seed-numbered"]:
                backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
                bucket, count = words[1], int(words[2])
                for i in range(count):
                    backend.put_object(bucket, f"d{i % 100}/o{i:06d}", str(i).encode())
                answer("ok")
            elif words[:1] == ["seed-big"]:
                backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
                bucket, key, size = words[1], words[2], int(words[3])
                block = bytes(range(256)) * 4096
                body = (block * (size // len(block) + 1))[:size]
                backend.put_object(bucket, key, body)
                del body
                answer("ok")
            else:
                answer(f"unknown command {line!r}")
    finally:
        server.stop()


def zygote(path):
    # The backends the tests use, imported before any fork (each child starts with them loaded).
    import moto.dynamodb.models  # noqa: F401
    import moto.kms.models  # noqa: F401
    import moto.secretsmanager.models  # noqa: F401
    import moto.stepfunctions.models  # noqa: F401
    import moto.sts.models  # noqa: F401
    import signal

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    # The zygote ends when its standard input closes (its children end with their connections).
    threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        if os.fork() == 0:
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
            probe.close()
            reader, writer = conn.makefile("r"), conn.makefile("w")

            def answer(text):
                writer.write(text + "\n")
                writer.flush()

            try:
                serve(port, reader, answer)
            finally:
                os._exit(0)
        conn.close()


if __name__ == "__main__":
    if sys.argv[1] == "--zygote":
        zygote(sys.argv[2])
    else:
        serve(int(sys.argv[1]), sys.stdin, lambda text: print(text, flush=True))
