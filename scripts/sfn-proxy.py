"""Route a local Step Functions run's Lambda invocations to `cargo lambda watch`, everything
else to moto. Runs until standard input closes, like scripts/moto-guard.py; prints `ready` once
it accepts connections.

  sfn-proxy.py LISTEN_PORT MOTO_URL LAMBDA_URL [NAME=URL/FUNCTION ...]
  e.g. sfn-proxy.py 5101 http://127.0.0.1:5100 http://127.0.0.1:9000 \
         job-shard=http://127.0.0.1:9001/ferry-export

A NAME=URL/FUNCTION route sends the invocations of function NAME to another emulator, as
function FUNCTION there: `cargo lambda watch` only serves names of the project's binaries, so
two deployed functions of one binary (with other settings) need two emulators.

Why: moto (after `{"stepfunctions": {"execute_state_machine": true}}` is posted to
/moto-api/config) really executes state machines, but its interpreter makes every service call
(lambda:invoke, the Map ItemReader's s3:getObject, ...) with boto3 at
http://localhost:$MOTO_PORT (moto/stepfunctions/parser/asl/utils/boto_client.py,
moto/settings.py moto_server_port()). There is no per-service endpoint, so a Lambda served by
`cargo lambda watch` on another port is out of reach. Start moto with MOTO_PORT set to this
proxy's port (`MOTO_PORT=B moto_server -p A`: moto_server sets MOTO_PORT to its own port only
when it is unset; ThreadedMotoServer never sets it, so set os.environ["MOTO_PORT"] first) and
the interpreter's calls land here: `/2015-03-31/functions/{name}/invocations` (the Lambda
Invoke API) goes to LAMBDA_URL, every other request to MOTO_URL. Method, path, query, headers
(Host included) and body are forwarded as they are; moto's answers stream back unchanged.

Lambda's answers are made to look like the real Invoke API's, which moto's interpreter relies
on (moto/stepfunctions/parser/asl/component/state/exec/state_task/lambda_eval_utils.py and
service/state_task_service_lambda.py):
- `cargo lambda watch` (1.9) answers a function error (the runtime's POST .../error) with HTTP
  500, the runtime's {"errorType", "errorMessage"} body and no X-Amz-Function-Error. Lambda
  answers 200 with `X-Amz-Function-Error: Unhandled`, from which moto takes errorType as the
  error name that Retry and Catch match. So a non-2xx answer whose body is a JSON object with
  errorType or errorMessage, and without X-Amz-Function-Error, goes on as 200 with
  `X-Amz-Function-Error: Unhandled` and the same body.
- Any other error answer (404 for an unknown function, 500 from the emulator itself) gets an
  x-amzn-RequestId if it has none (without it moto fails the whole execution with States.Runtime
  KeyError('RequestId') instead of a catchable task error) and an x-amzn-ErrorType, which moto
  names Lambda.<type>: ResourceNotFoundException for 404, ServiceException otherwise.
Lambda answers (6 MB at most on AWS) are buffered for this.

Standard library only.
"""
import http.client
import json
import re
import sys
import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

INVOKE = re.compile(r"^/2015-03-31/functions/([^/?]+)/invocations(?=[?#]|$)")
# Hop-by-hop headers (RFC 9110 section 7.6.1) are not forwarded; Expect is answered here.
HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authenticate",
       "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade", "expect"}
CHUNK = 64 * 1024


def upstream(url):
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        sys.exit(f"sfn-proxy: not an http(s) URL: {url!r}")
    return u.scheme, u.hostname, u.port or (443 if u.scheme == "https" else 80), u.path.rstrip("/")


def lambda_answer(status, headers, body):
    """(status, headers, body) of a Lambda Invoke answer, made to look like AWS Lambda's."""
    names = {name.lower() for name, _ in headers}
    if status < 300:
        return status, headers, body
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and ("errorType" in doc or "errorMessage" in doc) \
            and "x-amz-function-error" not in names:
        headers = [(n, v) for n, v in headers if n.lower() != "content-type"]
        return 200, headers + [("Content-Type", "application/json"),
                               ("X-Amz-Function-Error", "Unhandled")], body
    if "x-amzn-errortype" not in names:
        kind = "ResourceNotFoundException" if status == 404 else "ServiceException"
        headers = headers + [("x-amzn-ErrorType", kind)]
    if "x-amzn-requestid" not in names:
        headers = headers + [("x-amzn-RequestId", str(uuid.uuid4()))]
    return status, headers, body


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive towards clients; answers carry a length or chunks

    def log_message(self, *args):
        pass

    def _request_body(self):
        """The request body as bytes (a chunked upload is de-chunked), or None."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    def _send_head(self, status, reason, headers):
        self.send_response_only(status, reason)
        for name, value in headers:
            if name.lower() not in HOP:
                self.send_header(name, value)

    def _forward(self):
        invoke = INVOKE.match(self.path)
        to_lambda = bool(invoke)
        scheme, host, port, base = self.server.lambda_up if to_lambda else self.server.moto_up
        path = self.path
        route = invoke and self.server.routes.get(urllib.parse.unquote(invoke.group(1)))
        if route:
            scheme, host, port, function = route
            base = ""
            path = f"/2015-03-31/functions/{function}/invocations" + self.path[invoke.end():]
        body = self._request_body()
        conn_class = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        conn = conn_class(host, port, timeout=None)  # a first `cargo lambda watch` call compiles
        try:
            conn.putrequest(self.command, base + path, skip_host=True,
                            skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in HOP and name.lower() != "content-length":
                    conn.putheader(name, value)
            if "Host" not in self.headers:
                conn.putheader("Host", f"{host}:{port}")
            if body is not None or self.command in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(body or b"")))
            conn.endheaders(body)
            resp = conn.getresponse()
        except OSError as e:
            conn.close()
            status, headers, data = 502, [("Content-Type", "text/plain")], \
                f"sfn-proxy: {host}:{port} unreachable: {e}\n".encode()
            if to_lambda:
                status, headers, data = lambda_answer(status, headers, data)
            self._send_head(status, None, headers + [("Content-Length", str(len(data)))])
            self.end_headers()
            self.wfile.write(data)
            return
        try:
            no_body = self.command == "HEAD" or resp.status in (204, 304) or resp.status < 200
            if to_lambda and not no_body:
                data = resp.read()
                status, headers, data = lambda_answer(
                    resp.status, [(n, v) for n, v in resp.getheaders()
                                  if n.lower() != "content-length"], data)
                self._send_head(status, None if status != resp.status else resp.reason,
                                headers + [("Content-Length", str(len(data)))])
                self.end_headers()
                self.wfile.write(data)
                return
            self._send_head(resp.status, resp.reason, resp.getheaders())
            chunked = not no_body and resp.getheader("Content-Length") is None
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if no_body:
                return
            while True:
                data = resp.read1(CHUNK)
                if not data:
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
                self.wfile.flush()
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        finally:
            conn.close()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _forward


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    server.moto_up, server.lambda_up = upstream(sys.argv[2]), upstream(sys.argv[3])
    server.routes = {}
    for arg in sys.argv[4:]:
        name, sep, url = arg.partition("=")
        scheme, host, port, function = upstream(url)
        if not sep or not name or not function.strip("/"):
            sys.exit(f"sfn-proxy: a route is NAME=URL/FUNCTION, not {arg!r}")
        server.routes[name] = (scheme, host, port, function.strip("/"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    try:
        for _ in sys.stdin:
            pass
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    main()
