#!/usr/bin/env python3
"""Only holders of the cluster key take part in a cluster (real llmlimitd processes on loopback).

- A node with another cluster key, seeded with a good node, never joins: the two good nodes
  never list it, it never lists them, and its log says why.
- Raw TCP clients on a good node's peer port: a correct hello (built here from the cluster key,
  as docs/PROTOCOL.md describes) is answered with a verifiable HELLO_R, which shows the client
  speaks the protocol; then a hello under another key, a hello with the right key id but a
  forged tag, such a hello followed by a CHECK frame, a CHECK frame without any handshake,
  another major version, HTTP bytes, an empty frame, junk, and a silent connection are each
  refused: nothing is answered, the connection is closed, llmlimit_peer_auth_rejections_total
  rises by one, no check is served, and the node keeps serving HTTP and forwarding.
- Gossip datagrams without the key (junk, another key's id, the right key id with a forged
  seal) are dropped and counted in llmlimit_gossip_rejected_total.
- --peer-listen without --cluster-key-file (flag or environment), an unreadable or malformed key
  file: the daemon exits non-zero and names the problem.
- `llmlimitd keygen FILE` writes 64 hex digits and a newline with mode 0600, and never
  overwrites.
"""
import hashlib
import hmac
import os
import re
import socket
import stat
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, chat_body  # noqa: E402
from cluster import Cluster, ViewWatch, free_peer_port, keygen  # noqa: E402

KEYS = {
    "tiers": {"default": {"rpm": 100000, "input_tpm": 10000000, "output_tpm": 10000000}},
    "keys": {},
    "unknown_keys": "default",
}

C = None
GOOD = []
BAD = None

# ---------------------------------------------------------------- the handshake, from PROTOCOL.md


def read_key(path):
    with open(path) as f:
        return bytes.fromhex(f.readline().strip())


def kdf(key, subkey_id, length):
    """crypto_kdf_derive_from_key(length, subkey_id, "llmlimit", key): keyed BLAKE2b."""
    return hashlib.blake2b(digest_size=length, key=key, salt=struct.pack("<Q", subkey_id) + bytes(8),
                           person=b"llmlimit" + bytes(8)).digest()


def key_id(key):
    return kdf(key, 1, 16)[:8]


def mac(key, label, *pieces):
    """HMAC-SHA512-256 under K_mac of label (with its NUL) and length-prefixed pieces."""
    msg = label.encode() + b"\0" + b"".join(struct.pack(">I", len(p)) + p for p in pieces)
    return hmac.new(kdf(key, 2, 32), msg, hashlib.sha512).digest()[:32]


def hello_body(kid, node_id=b"intruder", major=1, role=0):
    assert len(node_id) < 32
    return (b"\x98\xa8llmlimit" + bytes([major, 0, role]) + b"\xc4\x08" + kid
            + b"\xc4\x20" + os.urandom(32) + b"\xc4\x20" + os.urandom(32)
            + bytes([0xa0 | len(node_id)]) + node_id)


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


# A CHECK message (envelope [major 1, type 1, [[id, key, limit, amount, hops]]]), unsealed.
CHECK_MSG = (b"\x93\x01\x01\x91\x95\x01\xc4\x05k_sec\x93\x01\x01\x01\x93\x01\x01\x01\x00")


def recv_all(s, timeout):
    """Reads until the peer closes (returns (bytes, True)) or timeout (bytes, False)."""
    out = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return out, False
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            return out, False
        except ConnectionResetError:
            return out, True
        if not chunk:
            return out, True
        out += chunk


def rejections(node):
    return {lab.get("reason"): v for n, lab, v in node.metrics() if n == "llmlimit_peer_auth_rejections_total"}


def served(node):
    return node.metric("llmlimit_peer_checks_served_total")


# ---------------------------------------------------------------- tests


def test_start_and_wrong_key_node_cannot_join():
    global C, GOOD, BAD
    C = Cluster(2, KEYS, prefix="good")
    C.start()
    GOOD = list(C.nodes)
    other_key = keygen(os.path.join(C.dir, "other.key"))
    check(read_key(other_key) != read_key(C.key_file), "keygen wrote the same key twice")
    rej0 = GOOD[0].metric("llmlimit_gossip_rejected_total", reason="auth")
    BAD = C.new_node(key_file=other_key)
    BAD.node_id = "intruder"
    watch = ViewWatch(GOOD, interval=0.05).start()
    try:
        C.start_nodes([BAD])
        watch.add(BAD)
        t0 = time.monotonic()
        explained = re.compile(r"different cluster key\?|no answer from any seed")
        try:
            harness.wait_until(lambda: explained.search(BAD.read_log()), timeout=20.0, interval=0.1,
                               what="the wrong-key node's log to explain why it is alone")
        except AssertionError as e:
            check(False, "%s; log:\n%s" % (e, BAD.read_log()[-2000:]))
        lines = [ln for ln in BAD.read_log().splitlines() if explained.search(ln)]
        print("  wrong-key node, after %.1fs: %s" % (time.monotonic() - t0, lines[0] if lines else "-"))
        # Gossip from it reached the good node and was refused as unauthenticated.
        try:
            harness.wait_until(lambda: GOOD[0].metric("llmlimit_gossip_rejected_total", reason="auth") > rej0,
                               timeout=5.0, what="llmlimit_gossip_rejected_total{reason=\"auth\"} to rise")
        except AssertionError as e:
            check(False, str(e))
    finally:
        watch.stop()
    check("different cluster key?" in GOOD[0].read_log(),
          "the seed's log does not hint at a different cluster key for the refused gossip")
    good_ids = {n.node_id for n in GOOD}
    seen_bad = sorted({k for k in watch.first if k[0] in good_ids and k[1] == BAD.node_id})
    check(not seen_bad, "a good node listed the wrong-key node: %r" % seen_bad)
    seen_good = sorted({k for k in watch.first if k[0] == BAD.node_id and k[1] in good_ids})
    check(not seen_good, "the wrong-key node listed a good node: %r" % seen_good)
    check(watch.rounds >= 10, "the views were polled only %d times" % watch.rounds)
    v = BAD.view()
    check([m["id"] for m in v["members"]] == [BAD.node_id], "wrong-key node lists %r" % v["members"])
    check(BAD.metric("llmlimit_peer_checks_forwarded_total") == 0, "the wrong-key node forwarded checks")
    for n in GOOD:
        check(n.metric("llmlimit_peer_checks_served_total") == 0, "%s served a check" % n.node_id)
    # The good pair is untouched.
    check(C.converged(GOOD), "the good nodes no longer see each other:\n%s" % C.describe())
    rc = BAD.stop()
    check(rc == 0, "wrong-key node exit code %s" % rc)


def attempt(what, data, reason, timeout=5.0, expect_timeout=False):
    """Connects to GOOD[0]'s peer port, sends data, and expects: nothing back, the connection
    closed (within timeout), exactly one more rejection (with `reason` when given)."""
    target = GOOD[0]
    before, served0 = rejections(target), served(target)
    s = socket.create_connection(("127.0.0.1", target.peer_port), timeout=5.0)
    t0 = time.monotonic()
    try:
        if data:
            s.sendall(data)
        got, closed = recv_all(s, timeout)
    finally:
        s.close()
    took = time.monotonic() - t0
    check(got == b"", "%s: the node answered %d bytes: %r" % (what, len(got), got[:64]))
    check(closed, "%s: the connection is still open after %.1fs" % (what, timeout))
    delta = {}

    def counted():
        after = rejections(target)
        delta.clear()
        delta.update({k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)})
        return sum(delta.values()) >= 1
    try:
        harness.wait_until(counted, timeout=5.0, what="%s: a rejection to be counted" % what)
    except AssertionError as e:
        check(False, str(e))
    check(sum(delta.values()) == 1, "%s: rejections rose by %r, expected exactly one" % (what, delta))
    if reason:
        check(delta.get(reason) == 1, "%s: rejection counted as %r, expected reason=%s" % (what, delta, reason))
    check(served(target) == served0, "%s: a check was served" % what)
    print("  %-44s closed after %.2fs, counted %s" % (what, took, delta))
    return took


def test_positive_control_hello_is_answered():
    """The raw client is right: a hello under the cluster key gets a HELLO_R that verifies."""
    key = read_key(C.key_file)
    body = hello_body(key_id(key))
    hello_i = body + mac(key, "llmlimit hello-i", body)
    target = GOOD[0]
    before = rejections(target)
    s = socket.create_connection(("127.0.0.1", target.peer_port), timeout=5.0)
    try:
        s.sendall(frame(hello_i))
        buf = b""
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and (len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]):
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                break
            if not chunk:
                break
            buf += chunk
    finally:
        s.close()
    ok = check(len(buf) >= 4 and len(buf) == 4 + struct.unpack(">I", buf[:4])[0],
               "no HELLO_R frame to a correct hello: %r" % buf[:64])
    if ok:
        hello_r = buf[4:]
        body_r, hdr_r, tag_r = hello_r[:-56], hello_r[-56:-32], hello_r[-32:]
        check(body_r[:13] == b"\x98\xa8llmlimit\x01\x00\x01", "HELLO_R body starts %r" % body_r[:13])
        check(body_r[13:23] == b"\xc4\x08" + key_id(key), "HELLO_R does not echo the key id")
        check(hmac.compare_digest(tag_r, mac(key, "llmlimit hello-r", hello_i, body_r, hdr_r)),
              "HELLO_R's tag does not verify under the cluster key: the test's handshake code is wrong")
        check(target.node_id.encode() in body_r, "HELLO_R does not carry the node id %s" % target.node_id)
    # Hanging up mid-handshake is itself refused and counted (handshake).
    try:
        harness.wait_until(lambda: sum(rejections(target).values()) > sum(before.values()), timeout=5.0,
                           what="the abandoned handshake to be counted")
    except AssertionError as e:
        check(False, str(e))


def test_peer_port_refuses_without_key():
    key = read_key(C.key_file)
    wrong = read_key(os.path.join(C.dir, "other.key"))
    body = hello_body(key_id(wrong))
    wrong_hello = frame(body + mac(wrong, "llmlimit hello-i", body))
    body = hello_body(key_id(key))
    forged = frame(body + mac(wrong, "llmlimit hello-i", body))        # right id, wrong MAC
    body = hello_body(key_id(key))
    flipped = bytearray(body + mac(key, "llmlimit hello-i", body))
    flipped[40] ^= 0x01                                                  # tampered after the MAC
    body = hello_body(key_id(key), major=2)
    v2 = frame(body + mac(key, "llmlimit hello-i", body))
    attempt("hello under another cluster key", wrong_hello, "handshake")
    attempt("hello: right key id, forged tag", forged, "handshake")
    attempt("hello: a byte flipped after signing", frame(bytes(flipped)), "handshake")
    attempt("wrong-key hello + CHECK frame", wrong_hello + frame(CHECK_MSG), "handshake")
    attempt("CHECK frame without a handshake", frame(CHECK_MSG), "malformed")
    attempt("hello of protocol major 2", v2, "version")
    attempt("HTTP request on the peer port", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "oversized")
    attempt("empty frame", b"\0\0\0\0", "malformed")
    attempt("random junk frame", frame(os.urandom(200)), None)
    took = attempt("silent connection", b"", "handshake", timeout=10.0)
    check(took <= 5.0, "a silent connection was held %.1fs (handshake timeout 2 s by default)" % took)


def test_still_serving_and_forwarding():
    for n in GOOD:
        s, _, b = n.request("GET", "/healthz")
        check(s == 200, "%s /healthz %s after the attacks" % (n.node_id, s))
    check(C.converged(GOOD), "the good nodes no longer see each other:\n%s" % C.describe())
    # A key owned by GOOD[0], asked through GOOD[1]: forwarded over an authenticated session.
    key = next(k for k in ("sec-%d" % i for i in range(200)) if GOOD[1].view(k)["owner"] == GOOD[0].node_id)
    f0, s0 = GOOD[1].metric("llmlimit_peer_checks_forwarded_total"), served(GOOD[0])
    for _ in range(5):
        s, h, b = GOOD[1].request("POST", "/v1/chat/completions", chat_body("hi", max_tokens=2), key=key)
        check(s == 200, "forwarded request: status %s %r" % (s, b[:200]))
    check(GOOD[1].metric("llmlimit_peer_checks_forwarded_total") - f0 >= 5, "the non-owner did not forward")
    check(served(GOOD[0]) - s0 >= 5, "the owner did not serve the forwarded checks")
    log = GOOD[0].read_log()
    check(re.search(r"peer connection refused.*reason=handshake", log) is not None,
          "the good node's log does not mention a refused peer connection")


def gossip_packet(kid, node_id=b"intruder", body_len=48):
    """Version 1 header (key id, epoch, counter, sender id), a nonce, then a fake seal."""
    return (b"\x01" + kid + struct.pack(">QQ", int(time.time()), 1) + bytes([len(node_id)]) + node_id
            + os.urandom(24) + os.urandom(body_len))


def test_gossip_without_key_is_dropped():
    target = GOOD[0]
    key = read_key(C.key_file)
    wrong = read_key(os.path.join(C.dir, "other.key"))

    def rejected():
        return {lab.get("reason"): v for n, lab, v in target.metrics() if n == "llmlimit_gossip_rejected_total"}
    cases = [("junk datagram", os.urandom(100), None),
             ("another key's id", gossip_packet(key_id(wrong)), "auth"),
             ("right key id, forged seal", gossip_packet(key_id(key)), None)]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for what, pkt, reason in cases:
            before = rejected()
            u.sendto(pkt, ("127.0.0.1", target.peer_port))
            delta = {}

            def counted():
                after = rejected()
                delta.clear()
                delta.update({k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)})
                return delta
            try:
                harness.wait_until(counted, timeout=5.0, what="gossip %s to be counted" % what)
            except AssertionError as e:
                check(False, str(e))
            if reason:
                check(delta.get(reason, 0) >= 1, "gossip %s counted as %r, expected reason=%s" % (what, delta, reason))
            print("  gossip %-28s dropped, counted %s" % (what, delta))
    finally:
        u.close()
    check(C.converged(GOOD), "the good nodes no longer see each other:\n%s" % C.describe())
    members = {m["id"] for m in target.view()["members"]}
    check("intruder" not in members, "a forged gossip packet added a member: %r" % members)


def test_stop_good_nodes():
    C.stop_all()


# ---------------------------------------------------------------- command line


def run_daemon(args, env_extra=None, timeout=15.0):
    """Runs llmlimitd expecting it to exit by itself; returns (rc, output)."""
    env = dict(os.environ, **(env_extra or {}))
    for k in [k for k in env if k.startswith("LLMLIMIT_") and k not in (env_extra or {})]:
        del env[k]  # only what the test says
    p = subprocess.Popen([harness.LLMLIMITD] + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        check(False, "llmlimitd %r still running after %.0fs" % (args, timeout))
    out = out.decode("utf-8", "replace")
    check("AddressSanitizer" not in out and "runtime error:" not in out and "LeakSanitizer" not in out,
          "sanitizer report from llmlimitd %r:\n%s" % (args, out[-3000:]))
    return p.returncode, out


def exited_with_error(rc):
    """A normal non-zero exit: not 0, and not death by a signal (an abort is a crash)."""
    return rc is not None and rc > 0


def test_cluster_mode_needs_a_key_file():
    d = C.dir if C else "/tmp"
    base = ["--listen", "127.0.0.1:%d" % harness.free_port(), "--keys", os.path.join(GOOD[0].dir, "keys.json")]
    peer = "127.0.0.1:%d" % free_peer_port()
    rc, out = run_daemon(base + ["--peer-listen", peer])
    check(exited_with_error(rc) and "--cluster-key-file" in out,
          "--peer-listen without a key file: exit %s, output %r" % (rc, out[-500:]))
    print("  no key file: exit %s: %s" % (rc, out.strip().splitlines()[-1] if out.strip() else ""))
    rc, out = run_daemon(base, {"LLMLIMIT_PEER_LISTEN": peer})
    check(exited_with_error(rc) and "cluster-key-file" in out.lower(),
          "LLMLIMIT_PEER_LISTEN without a key file: exit %s, output %r" % (rc, out[-500:]))
    missing = os.path.join(d, "no-such.key")
    rc, out = run_daemon(base + ["--peer-listen", peer, "--cluster-key-file", missing])
    check(exited_with_error(rc) and missing in out, "missing key file: exit %s, output %r" % (rc, out[-500:]))
    bad = os.path.join(d, "bad.key")
    with open(bad, "w") as f:
        f.write("this is not a key\n")
    os.chmod(bad, 0o600)
    rc, out = run_daemon(base + ["--peer-listen", peer, "--cluster-key-file", bad])
    check(exited_with_error(rc) and bad in out, "malformed key file: exit %s, output %r" % (rc, out[-500:]))
    short = os.path.join(d, "short.key")
    with open(short, "w") as f:
        f.write("ab" * 31 + "\n")
    os.chmod(short, 0o600)
    rc, out = run_daemon(base + ["--peer-listen", peer, "--cluster-key-file", short])
    check(exited_with_error(rc) and short in out, "62-digit key file: exit %s, output %r" % (rc, out[-500:]))


def test_keygen():
    d = C.dir if C else "/tmp"
    path = os.path.join(d, "fresh.key")
    rc, out, err = harness.run_cli(["keygen", path])
    check(rc == 0, "keygen exit %s: %s%s" % (rc, out, err))
    st = os.stat(path)
    check(stat.S_IMODE(st.st_mode) == 0o600, "keygen file mode %o, expected 600" % stat.S_IMODE(st.st_mode))
    with open(path, "rb") as f:
        first = f.read()
    check(re.fullmatch(rb"[0-9a-f]{64}\n", first) is not None, "keygen wrote %r" % first)
    rc, out, err = harness.run_cli(["keygen", path])
    check(rc != 0, "keygen overwrote (or claimed to overwrite) an existing file: exit %s" % rc)
    check(path in out + err, "keygen's refusal does not name the file: %r" % (out + err))
    with open(path, "rb") as f:
        check(f.read() == first, "keygen changed an existing key file")
    other = os.path.join(d, "fresh2.key")
    rc, _, _ = harness.run_cli(["keygen", other])
    with open(other, "rb") as f:
        check(rc == 0 and f.read() != first, "two keygens wrote the same key")
    rc, out, err = harness.run_cli(["keygen", os.path.join(d, "no", "such", "dir.key")])
    check(rc != 0, "keygen into a missing directory exited %s" % rc)
    rc, out, err = harness.run_cli(["keygen"])
    check(rc != 0, "keygen without a file exited %s" % rc)


if __name__ == "__main__":
    harness.run([test_start_and_wrong_key_node_cannot_join,
                 test_positive_control_hello_is_answered, test_peer_port_refuses_without_key,
                 test_still_serving_and_forwarding, test_gossip_without_key_is_dropped,
                 test_stop_good_nodes, test_cluster_mode_needs_a_key_file, test_keygen])
