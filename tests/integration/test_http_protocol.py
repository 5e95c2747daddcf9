#!/usr/bin/env python3
"""The HTTP/1.x protocol layer of a real llmlimitd, over raw sockets: keep-alive, pipelining,
HTTP/1.0, Connection: close, chunked request bodies, Expect: 100-continue, and every limit the
server enforces on its own (431, 413, 400, 408, idle close, 503 over max connections), each
refusal answered with an OpenAI error body and followed by the connection closing."""
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Node, check, check_error, raw_exchange  # noqa: E402

KEY = "k_proto"
KEYS = {
    "tiers": {"default": {"rpm": 100000, "input_tpm": 10000000, "output_tpm": 10000000}},
    "keys": {KEY: {"tier": "default"}},
    "unknown_keys": "reject",
}
CHAT = json.dumps({"model": "mock-gpt", "max_tokens": 5,
                   "messages": [{"role": "user", "content": "hello over raw sockets"}]}).encode()


# ---- a small HTTP/1.x response reader --------------------------------------------------------

class Response:
    def __init__(self, version, status, headers, body):
        self.version = version      # "HTTP/1.1"
        self.status = status
        self.headers = headers      # lower-cased names
        self.body = body

    def as_tuple(self):
        """(status, headers, body), the shape harness.check_error expects."""
        return self.status, self.headers, self.body

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def parse_one(data, closed):
    """Parses one response from the start of data. Returns (Response, rest), or (None, data)
    when more bytes are needed. closed: the peer has closed (a body may run until close)."""
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        return None, data
    lines = data[:head_end].decode("latin-1").split("\r\n")
    version, status = lines[0].split(" ", 2)[:2]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    rest = data[head_end + 4:]
    status = int(status)
    if status == 100 or status == 204 or status == 304:
        return Response(version, status, headers, b""), rest
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            eol = rest.find(b"\r\n")
            if eol < 0:
                return None, data
            size = int(rest[:eol].split(b";")[0], 16)
            if len(rest) < eol + 2 + size + 2:
                return None, data
            body += rest[eol + 2:eol + 2 + size]
            rest = rest[eol + 2 + size + 2:]
            if size == 0:
                return Response(version, status, headers, body), rest
    if "content-length" in headers:
        n = int(headers["content-length"])
        if len(rest) < n:
            return None, data
        return Response(version, status, headers, rest[:n]), rest[n:]
    if not closed:
        return None, data
    return Response(version, status, headers, rest), b""


def parse_all(data, closed=True):
    """Every complete response in data, in order, and the unparsed rest."""
    out = []
    while data:
        r, data = parse_one(data, closed)
        if r is None:
            break
        out.append(r)
    return out, data


class Client:
    """A raw connection that reads responses as they arrive and notices the server closing."""

    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.closed = False

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self.buf += chunk
        return True

    def responses(self, n, timeout=5.0):
        """Reads until n responses arrived (or the server closed / timeout)."""
        deadline = time.monotonic() + timeout
        got = []
        while len(got) < n:
            r, self.buf = parse_one(self.buf, self.closed)
            if r is not None:
                got.append(r)
                continue
            if self.closed or time.monotonic() >= deadline or not self._fill(deadline):
                if self.closed:
                    r, self.buf = parse_one(self.buf, True)
                    if r is not None:
                        got.append(r)
                        continue
                break
        return got

    def wait_closed(self, timeout=5.0):
        """True once the server closed the connection (EOF or reset) within timeout."""
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self._fill(deadline)
        return self.closed

    def close(self):
        self.sock.close()


def get(path, extra=b"", version=b"1.1", key=True):
    auth = b"Authorization: Bearer " + KEY.encode() + b"\r\n" if key else b""
    return (b"GET " + path.encode() + b" HTTP/" + version + b"\r\nHost: 127.0.0.1\r\n" + auth +
            extra + b"\r\n")


def post_chat(extra=b"", body=CHAT):
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " +
            KEY.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: " +
            str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


def check_refusal(resp, status, what):
    """An error response the server generated itself: status, OpenAI error body, closing."""
    if not check(resp is not None, "%s: no response at all" % what):
        return
    check_error(resp.as_tuple(), status, what=what)
    check(resp.headers.get("connection", "").lower() == "close",
          "%s: expected Connection: close, got %r" % (what, resp.headers.get("connection")))


def is_chat_completion(resp):
    doc = resp.json() if resp else None
    return isinstance(doc, dict) and doc.get("object") == "chat.completion" and doc.get("choices")


# ---- tests ------------------------------------------------------------------------------------

def test_keep_alive():
    with Node(KEYS) as n:
        c = Client(n.port)
        c.send(get("/healthz"))
        r1 = c.responses(1)
        c.send(get("/v1/models"))
        r2 = c.responses(1)
        check(len(r1) == 1 and r1[0].status == 200, "keep-alive: first response %r" %
              [(r.status, r.body[:100]) for r in r1])
        check(len(r2) == 1 and r2[0].status == 200, "keep-alive: second response on the same "
              "connection %r (closed=%s)" % ([(r.status, r.body[:100]) for r in r2], c.closed))
        if r1:
            check(r1[0].version == "HTTP/1.1" and
                  r1[0].headers.get("connection", "keep-alive").lower() != "close",
                  "keep-alive: HTTP/1.1 response must keep the connection: %r" % r1[0].headers)
        if r2:
            doc = r2[0].json()
            check(isinstance(doc, dict) and isinstance(doc.get("data"), list),
                  "keep-alive: /v1/models body %r" % r2[0].body[:200])
        check(not c.closed, "keep-alive: the server closed a keep-alive connection")
        c.close()


def test_pipelining():
    with Node(KEYS) as n:
        c = Client(n.port)
        c.send(get("/healthz") + get("/v1/models") + post_chat(b"Connection: close\r\n"))
        rs = c.responses(3)
        check([r.status for r in rs] == [200, 200, 200],
              "pipelining: statuses %r" % [(r.status, r.body[:120]) for r in rs])
        if len(rs) == 3:
            models = rs[1].json()
            check(isinstance(models, dict) and isinstance(models.get("data"), list),
                  "pipelining: 2nd response is not /v1/models: %r" % rs[1].body[:200])
            check(is_chat_completion(rs[2]),
                  "pipelining: 3rd response is not a chat completion: %r" % rs[2].body[:200])
            check(rs[2].headers.get("connection", "").lower() == "close",
                  "pipelining: last response (Connection: close) headers %r" % rs[2].headers)
        check(c.wait_closed(), "pipelining: connection not closed after Connection: close")
        c.close()

        # Many in one send: every one answered, in order.
        c = Client(n.port)
        c.send(b"".join(get("/v1/models?i=%d" % i) for i in range(20)) +
               get("/healthz", b"Connection: close\r\n"))
        rs = c.responses(21)
        check(len(rs) == 21 and all(r.status == 200 for r in rs),
              "pipelining x21: got %d responses %r" % (len(rs), [r.status for r in rs]))
        check(c.wait_closed(), "pipelining x21: not closed after the last")
        c.close()


def test_http10():
    with Node(KEYS) as n:
        c = Client(n.port)
        c.send(get("/healthz", version=b"1.0"))
        rs = c.responses(1)
        check(len(rs) == 1 and rs[0].status == 200, "HTTP/1.0: response %r" %
              [(r.status, r.body[:100]) for r in rs])
        if rs:
            check(rs[0].version == "HTTP/1.0", "HTTP/1.0: answered as %s" % rs[0].version)
            check(rs[0].headers.get("connection", "").lower() == "close",
                  "HTTP/1.0: expected Connection: close, got %r" % rs[0].headers)
        check(c.wait_closed(), "HTTP/1.0: connection not closed after the response")
        c.close()

        # HTTP/1.0 with Connection: keep-alive stays open.
        c = Client(n.port)
        c.send(get("/healthz", b"Connection: keep-alive\r\n", version=b"1.0"))
        r1 = c.responses(1)
        c.send(get("/healthz", b"Connection: keep-alive\r\n", version=b"1.0"))
        r2 = c.responses(1)
        check(len(r1) == 1 and len(r2) == 1 and r1[0].status == 200 and r2[0].status == 200,
              "HTTP/1.0 keep-alive: two responses expected, closed=%s" % c.closed)
        if r1:
            check(r1[0].headers.get("connection", "").lower() == "keep-alive",
                  "HTTP/1.0 keep-alive: Connection header %r" % r1[0].headers)
        c.close()


def test_connection_close():
    with Node(KEYS) as n:
        c = Client(n.port)
        c.send(get("/healthz", b"Connection: close\r\n") + get("/healthz"))
        rs = c.responses(2, timeout=2.0)
        check(len(rs) == 1 and rs[0].status == 200,
              "Connection: close: expected exactly one response, got %r" % [r.status for r in rs])
        if rs:
            check(rs[0].headers.get("connection", "").lower() == "close",
                  "Connection: close: response header %r" % rs[0].headers)
        check(c.closed or c.wait_closed(), "Connection: close: connection left open")
        c.close()


def test_chunked_body():
    with Node(KEYS) as n:
        parts = [CHAT[:7], CHAT[7:30], CHAT[30:]]
        body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
        req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
               KEY.encode() + b"\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")
        c = Client(n.port)
        c.send(req)
        # The chunks arrive in separate packets: the server must assemble the body.
        for i in range(0, len(body), 11):
            c.send(body[i:i + 11])
            time.sleep(0.002)
        rs = c.responses(1)
        check(len(rs) == 1 and rs[0].status == 200 and is_chat_completion(rs[0]),
              "chunked body: %r" % [(r.status, r.body[:200]) for r in rs])
        # The connection is still usable afterwards.
        c.send(get("/healthz"))
        rs = c.responses(1)
        check(len(rs) == 1 and rs[0].status == 200, "chunked body: next request on the conn")
        c.close()


def test_expect_continue():
    with Node(KEYS) as n:
        c = Client(n.port)
        head = post_chat(b"Expect: 100-continue\r\n")[:-len(CHAT)]
        c.send(head)
        interim = c.responses(1, timeout=3.0)
        check(len(interim) == 1 and interim[0].status == 100,
              "Expect: 100-continue: expected an interim 100, got %r" %
              [(r.status, r.body[:100]) for r in interim])
        c.send(CHAT)
        rs = c.responses(1)
        check(len(rs) == 1 and rs[0].status == 200 and is_chat_completion(rs[0]),
              "Expect: 100-continue: final response %r" % [(r.status, r.body[:100]) for r in rs])
        c.close()
        # Any other expectation: 417, then close.
        c = Client(n.port)
        c.send(post_chat(b"Expect: 200-ok\r\n"))
        rs = c.responses(1)
        check_refusal(rs[0] if rs else None, 417, "Expect: other")
        check(c.wait_closed(), "417: connection not closed")
        c.close()


def test_header_too_large():
    with Node(KEYS, ["--max-header-bytes", "2048", "--max-headers", "20"]) as n:
        c = Client(n.port)
        c.send(get("/healthz", b"X-Big: " + b"a" * 4096 + b"\r\n"))
        rs = c.responses(1)
        check_refusal(rs[0] if rs else None, 431, "431 (header bytes)")
        check(c.wait_closed(), "431: connection not closed")
        c.close()

        c = Client(n.port)
        c.send(get("/healthz", b"".join(b"X-H%d: v\r\n" % i for i in range(30))))
        rs = c.responses(1)
        check_refusal(rs[0] if rs else None, 431, "431 (header count)")
        check(c.wait_closed(), "431 (count): connection not closed")
        c.close()

        # Just under the limits is fine.
        c = Client(n.port)
        c.send(get("/healthz", b"X-Big: " + b"a" * 1024 + b"\r\n"))
        rs = c.responses(1)
        check(len(rs) == 1 and rs[0].status == 200, "under the header limit: %r" %
              [r.status for r in rs])
        c.close()


def test_body_too_large():
    with Node(KEYS, ["--max-body-bytes", "1000"]) as n:
        # A declared length over the limit is refused before the body is sent.
        c = Client(n.port)
        c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
               KEY.encode() + b"\r\nContent-Type: application/json\r\n"
               b"Content-Length: 100000\r\n\r\n")
        rs = c.responses(1, timeout=3.0)
        check_refusal(rs[0] if rs else None, 413, "413 (Content-Length)")
        check(c.wait_closed(), "413 (Content-Length): connection not closed")
        c.close()

        # Chunked: refused once the decoded body passes the limit.
        c = Client(n.port)
        c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
               KEY.encode() + b"\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(5):
                c.send(b"190\r\n" + b"x" * 400 + b"\r\n")
        except OSError:
            pass  # the server may already have answered and closed
        rs = c.responses(1, timeout=3.0)
        check_refusal(rs[0] if rs else None, 413, "413 (chunked)")
        check(c.wait_closed(), "413 (chunked): connection not closed")
        c.close()

        # A body within the limit still works.
        c = Client(n.port)
        c.send(post_chat())
        rs = c.responses(1)
        check(len(rs) == 1 and rs[0].status == 200, "body under the limit: %r" %
              [(r.status, r.body[:200]) for r in rs])
        c.close()


MALFORMED = [
    ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n"),
    ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    ("bad Content-Length",
     b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 12abc\r\n\r\n"),
    ("Content-Length with Transfer-Encoding",
     b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 5\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("bad chunk size",
     b"POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
    ("bad request line", b"GET\r\n\r\n"),
]


def test_malformed():
    with Node(KEYS) as n:
        for what, data in MALFORMED:
            c = Client(n.port)
            c.send(data)
            rs = c.responses(1)
            if check(len(rs) == 1, "%s: no response (closed=%s, got %r)" % (what, c.closed, c.buf)):
                check_refusal(rs[0], 400, what)
            check(c.wait_closed(), "%s: connection not closed after the 400" % what)
            c.close()
        # A request after garbage on the same connection is never served.
        c = Client(n.port)
        c.send(b"BLAH\x00 / HTTP/1.1\r\n\r\n" + get("/healthz"))
        rs = c.responses(2, timeout=2.0)
        check([r.status for r in rs] == [400],
              "garbage then a request: %r" % [r.status for r in rs])
        c.close()
        # Unsupported transfer coding: 501 (RFC 9112 section 6.1), also closing.
        c = Client(n.port)
        c.send(b"POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
               b"0\r\n\r\n")
        rs = c.responses(1)
        check_refusal(rs[0] if rs else None, 501, "Transfer-Encoding: gzip, chunked")
        check(c.wait_closed(), "501: connection not closed")
        c.close()
        # The server still serves after all of that.
        status, _, _ = n.request("GET", "/healthz")
        check(status == 200, "healthz after malformed requests: %s" % status)


def test_read_timeout():
    with Node(KEYS, ["--read-timeout-ms", "500"]) as n:
        c = Client(n.port)
        t0 = time.monotonic()
        c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # slowloris: never finished
        c.send(b"X-Slow: 1\r\n")
        rs = c.responses(1, timeout=5.0)
        elapsed = time.monotonic() - t0
        check_refusal(rs[0] if rs else None, 408, "408")
        check(0.4 <= elapsed <= 2.5, "408 after %.2fs, expected about 0.5s" % elapsed)
        check(c.wait_closed(), "408: connection not closed")
        c.close()

        # A complete request on a connection is not affected by the read timeout.
        c = Client(n.port)
        c.send(get("/healthz"))
        time.sleep(0.8)
        c.send(get("/healthz"))
        rs = c.responses(2)
        check(len(rs) == 2 and all(r.status == 200 for r in rs),
              "read timeout must not hit idle keep-alive: %r" % [r.status for r in rs])
        c.close()


def test_idle_close():
    with Node(KEYS, ["--idle-timeout-ms", "500"]) as n:
        c = Client(n.port)
        c.send(get("/healthz"))
        rs = c.responses(1)
        check(len(rs) == 1 and rs[0].status == 200,
              "idle: first request %r" % [r.status for r in rs])
        t0 = time.monotonic()
        closed = c.wait_closed(timeout=5.0)
        elapsed = time.monotonic() - t0
        check(closed, "idle keep-alive connection not closed")
        check(0.4 <= elapsed <= 2.5, "idle close after %.2fs, expected about 0.5s" % elapsed)
        check(c.buf == b"", "idle close must send nothing, got %r" % c.buf[:200])
        c.close()


def test_max_connections():
    with Node(KEYS, ["--max-connections", "2"]) as n:
        held = []
        for i in range(2):
            c = Client(n.port)
            c.send(get("/healthz"))
            rs = c.responses(1)
            check(len(rs) == 1 and rs[0].status == 200, "max-conn: connection %d served" % i)
            held.append(c)
        c = Client(n.port)
        rs = c.responses(1, timeout=5.0)  # refused at once, before any request is sent
        check_refusal(rs[0] if rs else None, 503, "503 over max connections")
        check(c.wait_closed(), "503: connection not closed")
        c.close()
        # Freeing a slot lets a new client in.
        held.pop().close()

        def served():
            out = raw_exchange(n.port, get("/healthz", b"Connection: close\r\n"), timeout=3.0)
            rs, _ = parse_all(out)
            return rs and rs[0].status == 200
        try:
            harness.wait_until(served, timeout=5.0, interval=0.05, what="a free connection slot")
        except AssertionError as e:
            check(False, str(e))
        for c in held:
            c.close()


if __name__ == "__main__":
    harness.run([test_keep_alive, test_pipelining, test_http10, test_connection_close,
                 test_chunked_body, test_expect_continue, test_header_too_large,
                 test_body_too_large, test_malformed, test_read_timeout, test_idle_close,
                 test_max_connections])
