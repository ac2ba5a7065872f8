"""Run a moto server on 127.0.0.1:PORT until standard input closes (so it never outlives the
test process or script that started it). Prints `ready` once it accepts requests."""
import logging
import sys

from moto.server import ThreadedMotoServer

logging.getLogger("werkzeug").setLevel(logging.ERROR)
port = int(sys.argv[1])
server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
server.start()
print("ready", flush=True)
try:
    sys.stdin.read()
finally:
    server.stop()
