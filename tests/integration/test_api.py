#!/usr/bin/env python3
"""The OpenAI-facing API of one real llmlimitd over real HTTP: status codes and error bodies,
response shapes (plain, streamed, completions, embeddings, models), usage numbers, rate-limit
headers, 429s per dimension, "never fits", unknown-key policy, keep-alive, pipelining and the
server's size/time/connection limits."""
import json
import math
import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, check_error, chat_body, do_request, go_duration_ms, json_or_none  # noqa: E402

TIER = {"rpm": 1000, "input_tpm": 100000, "output_tpm": 50000, "default_max_tokens": 256}
KEYS = {
    "tiers": {
        "default": TIER,
        "small": {"rpm": 1000, "input_tpm": 100000, "output_tpm": 50000, "default_max_tokens": 7},
    },
    "keys": {
        "k_main": {"tier": "default"},
        "k_hdr": {"tier": "default"},
        "k_n": {"tier": "default"},
        "k_cmp": {"tier": "default"},
        "k_stream": {"tier": "default"},
        "k_pipe": {"tier": "default"},
        "k_dflt": {"tier": "small"},
        "k_rpm": {"rpm": 3, "input_tpm": 100000, "output_tpm": 100000},
        "k_in": {"rpm": 1000, "input_tpm": 200, "output_tpm": 100000},
        "k_out": {"rpm": 1000, "input_tpm": 100000, "output_tpm": 100},
        "k_big": {"rpm": 1000, "input_tpm": 100000, "output_tpm": 100},
    },
    "unknown_keys": "reject",
}

RL_HEADERS = ["x-ratelimit-%s-%s" % (a, b) for a in ("limit", "remaining", "reset")
              for b in ("requests", "tokens", "input-tokens", "output-tokens")]

NODE = None


def est_chat(messages):
    """The documented input estimate for chat."""
    return sum(4 + math.ceil(len(m["content"].encode()) / 4) for m in messages) + 3


def mock_completion(prompt_tokens, cap):
    return min(cap, max(1, math.ceil(prompt_tokens / 2)))


def post(path, body, key, conn=None):
    if conn is not None:
        return do_request(conn, "POST", path, body, key=key)
    return NODE.request("POST", path, body, key=key)


def hint(h, name):
    v = h.get(name)
    try:
        return int(v)
    except (TypeError, ValueError):
        check(False, "header %s is %r, expected an integer" % (name, v))
        return None


def check_rl_headers(h, what):
    for name in RL_HEADERS:
        if not check(name in h, "%s: missing header %s (have %s)" % (what, name, sorted(h))):
            continue
        if "-reset-" in name:
            ms = go_duration_ms(h[name])
            check(ms is not None and ms <= 61000,
                  "%s: %s=%r is not a Go duration <= 61s" % (what, name, h[name]))
        else:
            check(re.match(r"^\d+$", h[name]) is not None,
                  "%s: %s=%r is not a non-negative integer" % (what, name, h[name]))


def check_usage(u, prompt, completion, what):
    if not check(isinstance(u, dict), "%s: usage missing: %r" % (what, u)):
        return
    check(u.get("prompt_tokens") == prompt, "%s: prompt_tokens %r, expected %d"
          % (what, u.get("prompt_tokens"), prompt))
    check(u.get("completion_tokens") == completion, "%s: completion_tokens %r, expected %d"
          % (what, u.get("completion_tokens"), completion))
    check(u.get("total_tokens") == prompt + completion, "%s: total_tokens %r, expected %d"
          % (what, u.get("total_tokens"), prompt + completion))


def check_429(resp, type_, limit_word, limit, used, requested, what):
    """A retryable 429: headers, error body, and the numbers in the message."""
    status, h, body = resp
    err = check_error(resp, 429, code="rate_limit_exceeded", what=what)
    check(err.get("type") == type_, "%s: error.type %r, expected %r" % (what, err.get("type"), type_))
    msg = err.get("message", "")
    check(limit_word(msg), "%s: message does not name the limit: %r" % (what, msg))
    m = re.search(r"Limit (\d+), Used (\d+), Requested (\d+)", msg)
    if check(m is not None, "%s: message lacks 'Limit L, Used U, Requested R': %r" % (what, msg)):
        check((int(m.group(1)), int(m.group(2)), int(m.group(3))) == (limit, used, requested),
              "%s: message numbers %s, expected Limit %d, Used %d, Requested %d"
              % (what, m.groups(), limit, used, requested))
    ra, ra_ms = h.get("retry-after"), h.get("retry-after-ms")
    if check(ra is not None and re.match(r"^\d+$", ra), "%s: retry-after %r" % (what, ra)) and \
            check(ra_ms is not None and re.match(r"^\d+$", ra_ms), "%s: retry-after-ms %r" % (what, ra_ms)):
        ra, ra_ms = int(ra), int(ra_ms)
        check(1 <= ra <= 61, "%s: retry-after %d not in [1, 61]" % (what, ra))
        check(0 < ra_ms <= 61000, "%s: retry-after-ms %d not in (0, 61000]" % (what, ra_ms))
        check(ra * 1000 >= ra_ms and ra <= ra_ms / 1000.0 + 1,
              "%s: retry-after %d is not retry-after-ms %d rounded up to seconds" % (what, ra, ra_ms))
        t = re.search(r"try again in ([0-9.hms]+)", msg)
        if check(t is not None, "%s: message lacks 'try again in X': %r" % (what, msg)):
            tm = go_duration_ms(t.group(1).rstrip("."))
            check(tm is not None and abs(tm - ra_ms) <= 1000,
                  "%s: 'try again in %s' disagrees with retry-after-ms %d" % (what, t.group(1), ra_ms))
    check_rl_headers(h, what)
    return err


# --- errors -------------------------------------------------------------------------------

def test_auth_errors():
    check_error(NODE.request("POST", "/v1/chat/completions", chat_body()), 401, what="no auth")
    check_error(NODE.request("POST", "/v1/chat/completions", chat_body(),
                             headers={"Authorization": "Basic azE6"}), 401, what="basic auth")
    check_error(NODE.request("POST", "/v1/chat/completions", chat_body(),
                             headers={"Authorization": "Bearer "}), 401, what="empty bearer")
    check_error(post("/v1/chat/completions", chat_body(), "no_such_key"), 401, code="invalid_api_key",
                what="unknown key")
    check_error(NODE.request("GET", "/v1/models", key="no_such_key"), 401, code="invalid_api_key",
                what="unknown key on /v1/models")


def test_404_405():
    check_error(NODE.request("GET", "/v1/nope", key="k_main"), 404, what="GET /v1/nope")
    check_error(NODE.request("POST", "/v1/nope", {"a": 1}, key="k_main"), 404, what="POST /v1/nope")
    check_error(NODE.request("GET", "/nothing/here"), 404, what="GET /nothing/here")
    check_error(NODE.request("GET", "/v1/chat/completions", key="k_main"), 405,
                what="GET /v1/chat/completions")
    check_error(NODE.request("DELETE", "/v1/completions", key="k_main"), 405,
                what="DELETE /v1/completions")
    check_error(NODE.request("POST", "/v1/models", {}, key="k_main"), 405, what="POST /v1/models")


def test_400_bad_json():
    bad = '{"model": "mock-gpt",\n "messages": [}\n'
    err = check_error(NODE.request("POST", "/v1/chat/completions", bad, key="k_main",
                                   headers={"Content-Type": "application/json"}), 400, what="bad JSON")
    check(re.search(r"line|column|position", err.get("message", ""), re.I) is not None,
          "bad JSON message does not mention line/column/position: %r" % err.get("message"))
    check_error(NODE.request("POST", "/v1/chat/completions", "", key="k_main",
                             headers={"Content-Type": "application/json"}), 400, what="empty body")
    check_error(post("/v1/chat/completions", [1, 2], "k_main"), 400, what="array body")
    check_error(NODE.request("POST", "/v1/chat/completions", b'{"model":"m","messages":[{"role":"user","content":"\xff\xfe"}]}',
                             key="k_main", headers={"Content-Type": "application/json"}), 400,
                what="invalid UTF-8 in JSON")


def test_400_invalid_fields():
    cases = [
        ("max_tokens -1", chat_body(max_tokens=-1), "max_tokens"),
        ("max_tokens 1000001", chat_body(max_tokens=1000001), "max_tokens"),
        ("max_tokens string", chat_body(max_tokens="12"), "max_tokens"),
        ("max_completion_tokens -5", chat_body(max_completion_tokens=-5), "max_completion_tokens"),
        ("messages object", {"model": "m", "messages": {"role": "user", "content": "x"}}, "messages"),
        ("messages missing", {"model": "m"}, "messages"),
        ("messages empty", {"model": "m", "messages": []}, "messages"),
        ("model missing", {"messages": [{"role": "user", "content": "x"}]}, "model"),
        ("n 0", chat_body(n=0), "n"),
        ("n 129", chat_body(n=129), "n"),
    ]
    for what, body, param in cases:
        check_error(post("/v1/chat/completions", body, "k_main"), 400, param=param, what=what)
    check_error(post("/v1/completions", {"model": "m", "prompt": "x", "max_tokens": -1}, "k_main"),
                400, param="max_tokens", what="completions max_tokens -1")


# --- shapes and usage -----------------------------------------------------------------------

def test_chat_completion_shape_and_usage():
    msgs = [{"role": "system", "content": "abcdefgh"}, {"role": "user", "content": "hello there"}]
    prompt = est_chat(msgs)
    check(prompt == 4 + 2 + 4 + 3 + 3, "test's own estimate")
    status, h, body = post("/v1/chat/completions", {"model": "mock-gpt", "messages": msgs,
                                                    "max_tokens": 100}, "k_main")
    check(status == 200, "chat: status %s body %r" % (status, body[:300]))
    check(h.get("content-type", "").startswith("application/json"), "chat content-type %r" % h.get("content-type"))
    d = json_or_none(body) or {}
    check(isinstance(d.get("id"), str) and d.get("id"), "chat: id %r" % d.get("id"))
    check(d.get("object") == "chat.completion", "chat: object %r" % d.get("object"))
    check(isinstance(d.get("created"), int) and abs(d["created"] - time.time()) < 3600,
          "chat: created %r is not a current unix time" % d.get("created"))
    check(isinstance(d.get("model"), str) and d.get("model"), "chat: model %r" % d.get("model"))
    ch = d.get("choices")
    if check(isinstance(ch, list) and len(ch) == 1, "chat: choices %r" % ch):
        c = ch[0]
        check(c.get("index") == 0, "chat: choice index %r" % c.get("index"))
        m = c.get("message") or {}
        check(m.get("role") == "assistant", "chat: message.role %r" % m.get("role"))
        check(isinstance(m.get("content"), str) and m.get("content"), "chat: content %r" % m.get("content"))
        check(c.get("finish_reason") in ("stop", "length"), "chat: finish_reason %r" % c.get("finish_reason"))
    check_usage(d.get("usage"), prompt, mock_completion(prompt, 100), "chat usage")
    check_rl_headers(h, "chat 200")

    # Cap below the mock's natural length; max_completion_tokens wins over max_tokens.
    status, _, body = post("/v1/chat/completions", chat_body("hello there", max_tokens=100,
                                                             max_completion_tokens=3), "k_main")
    d = json_or_none(body) or {}
    check(status == 200, "chat max_completion_tokens: status %s" % status)
    check_usage(d.get("usage"), 10, 3, "chat max_completion_tokens=3")
    if d.get("choices"):
        check(d["choices"][0].get("finish_reason") == "length",
              "cut at the cap: finish_reason %r, expected length" % d["choices"][0].get("finish_reason"))

    # n choices: completion_tokens is the sum over choices.
    status, _, body = post("/v1/chat/completions", chat_body("hello there", max_tokens=100, n=3), "k_main")
    d = json_or_none(body) or {}
    check(status == 200, "chat n=3: status %s" % status)
    ch = d.get("choices") or []
    check([c.get("index") for c in ch] == [0, 1, 2], "chat n=3: choice indexes %r" % [c.get("index") for c in ch])
    check_usage(d.get("usage"), 10, 3 * 5, "chat n=3")


def test_tier_default_max_tokens():
    content = "x" * 400
    prompt = est_chat([{"content": content}])
    status, _, body = post("/v1/chat/completions", chat_body(content), "k_dflt")
    check(status == 200, "default max tokens: status %s %r" % (status, body[:200]))
    check_usage((json_or_none(body) or {}).get("usage"), prompt, 7, "tier default_max_tokens=7")


def parse_sse(body, what):
    """Splits an SSE body into events; each must be exactly 'data: ...\\n\\n'."""
    text = body.decode("utf-8", "replace")
    check(text.endswith("data: [DONE]\n\n"), "%s: stream does not end with 'data: [DONE]\\n\\n': %r"
          % (what, text[-200:]))
    raw = text.split("\n\n")
    check(raw[-1] == "", "%s: trailing bytes after the last event: %r" % (what, raw[-1][:100]))
    events = []
    for e in raw[:-1]:
        if not check(e.startswith("data: ") and "\n" not in e, "%s: malformed event %r" % (what, e[:200])):
            continue
        events.append(e[len("data: "):])
    check(events.count("[DONE]") == 1 and events[-1] == "[DONE]",
          "%s: [DONE] must appear once, last: %r" % (what, events[-3:]))
    chunks = []
    for e in events[:-1]:
        j = json_or_none(e)
        if check(isinstance(j, dict), "%s: event is not a JSON object: %r" % (what, e[:200])):
            chunks.append(j)
    return chunks


def check_stream(chunks, prompt, completion, include_usage, n, what):
    if not check(len(chunks) >= 3, "%s: only %d chunks" % (what, len(chunks))):
        return
    ids = {c.get("id") for c in chunks}
    check(len(ids) == 1 and isinstance(next(iter(ids)), str), "%s: chunk ids differ: %r" % (what, ids))
    check(all(c.get("object") == "chat.completion.chunk" for c in chunks),
          "%s: objects %r" % (what, {c.get("object") for c in chunks}))
    check(len({c.get("created") for c in chunks}) == 1, "%s: created differs between chunks" % what)
    body_chunks = chunks
    if include_usage:
        last = chunks[-1]
        check(last.get("choices") == [], "%s: usage chunk choices %r, expected []" % (what, last.get("choices")))
        check_usage(last.get("usage"), prompt, completion, what + " usage chunk")
        body_chunks = chunks[:-1]
    for c in body_chunks:
        check(isinstance(c.get("choices"), list) and len(c["choices"]) >= 1,
              "%s: chunk without choices before the end: %r" % (what, c))
        check(c.get("usage") is None, "%s: usage on a non-final chunk: %r" % (what, c.get("usage")))
    for i in range(n):
        seq = [ch for c in body_chunks for ch in c.get("choices", []) if ch.get("index") == i]
        if not check(len(seq) >= 3, "%s: choice %d has %d chunks, expected role, content..., finish"
                     % (what, i, len(seq))):
            continue
        first = seq[0].get("delta") or {}
        check(first.get("role") == "assistant", "%s: choice %d first delta %r lacks role assistant"
              % (what, i, first))
        finishes = [k for k, ch in enumerate(seq) if ch.get("finish_reason") is not None]
        check(finishes == [len(seq) - 1], "%s: choice %d finish_reason must be set on its last chunk only: %r"
              % (what, i, [ch.get("finish_reason") for ch in seq]))
        check(seq[-1].get("finish_reason") in ("stop", "length"),
              "%s: finish_reason %r" % (what, seq[-1].get("finish_reason")))
        text = "".join((ch.get("delta") or {}).get("content") or "" for ch in seq)
        check(len(text) > 0, "%s: choice %d streamed no content" % (what, i))
        check(all(isinstance((ch.get("delta") or {}).get("content"), str) for ch in seq[1:-1]),
              "%s: choice %d middle chunks must carry delta.content" % (what, i))
    if not include_usage:
        check(all(c.get("choices") for c in chunks), "%s: a choices [] chunk without include_usage" % what)


def test_stream():
    content = "hello there"
    prompt = est_chat([{"content": content}])
    for include_usage, n in ((True, 1), (False, 1), (True, 2)):
        what = "stream include_usage=%s n=%d" % (include_usage, n)
        b = chat_body(content, max_tokens=100, stream=True, n=n)
        if include_usage:
            b["stream_options"] = {"include_usage": True}
        status, h, body = post("/v1/chat/completions", b, "k_stream")
        check(status == 200, "%s: status %s %r" % (what, status, body[:200]))
        check(h.get("content-type", "").startswith("text/event-stream"),
              "%s: content-type %r" % (what, h.get("content-type")))
        check_rl_headers(h, what)
        check_stream(parse_sse(body, what), prompt, n * mock_completion(prompt, 100), include_usage, n, what)

    # The stream is chunked on the wire: one HTTP chunk per event, a zero chunk at the end.
    b = json.dumps(chat_body(content, max_tokens=4, stream=True)).encode()
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer k_stream\r\n"
           b"Content-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(b)) + b
    raw = harness.raw_exchange(NODE.port, req, timeout=10.0)
    head, _, rest = raw.partition(b"\r\n\r\n")
    check(b"200" in head.split(b"\r\n")[0], "raw stream: status line %r" % head[:80])
    check(re.search(rb"(?im)^transfer-encoding:\s*chunked", head) is not None,
          "raw stream: not Transfer-Encoding: chunked: %r" % head)
    check(rest.endswith(b"0\r\n\r\n"), "raw stream: no terminating zero chunk: %r" % rest[-40:])


def test_completions():
    prompt_text = "y" * 400
    status, h, body = post("/v1/completions", {"model": "mock-gpt", "prompt": prompt_text}, "k_cmp")
    check(status == 200, "completions: status %s %r" % (status, body[:200]))
    d = json_or_none(body) or {}
    check(d.get("object") == "text_completion", "completions: object %r" % d.get("object"))
    check(isinstance(d.get("id"), str) and isinstance(d.get("created"), int), "completions: id/created %r" % d)
    ch = d.get("choices") or []
    if check(len(ch) == 1, "completions: choices %r" % ch):
        check(isinstance(ch[0].get("text"), str) and ch[0].get("index") == 0, "completions: choice %r" % ch[0])
        check(ch[0].get("finish_reason") in ("stop", "length"), "completions: finish %r" % ch[0].get("finish_reason"))
    u = d.get("usage") or {}
    p = u.get("prompt_tokens")
    if check(isinstance(p, int) and p >= 100, "completions: prompt_tokens %r for 400 bytes" % p):
        check_usage(u, p, mock_completion(p, 16), "completions default max_tokens 16")
        check(u.get("completion_tokens", 99) <= 16, "completions: completion_tokens > 16")
    check_rl_headers(h, "completions")
    # The reservation was 16 and 16 were used: both readings of "remaining" agree here.
    check(h.get("x-ratelimit-remaining-output-tokens") == str(50000 - 16),
          "completions: remaining-output-tokens %r, expected %d"
          % (h.get("x-ratelimit-remaining-output-tokens"), 50000 - 16))
    status, _, body = post("/v1/completions", {"model": "mock-gpt", "prompt": "hi", "max_tokens": 1}, "k_cmp")
    d = json_or_none(body) or {}
    check(status == 200 and (d.get("usage") or {}).get("completion_tokens") == 1,
          "completions max_tokens 1: %s %r" % (status, body[:200]))


def test_embeddings():
    status, h, body = post("/v1/embeddings", {"model": "mock-embed", "input": ["first text", "second"]}, "k_main")
    check(status == 200, "embeddings: status %s %r" % (status, body[:200]))
    d = json_or_none(body) or {}
    check(d.get("object") == "list", "embeddings: object %r" % d.get("object"))
    check(isinstance(d.get("model"), str), "embeddings: model %r" % d.get("model"))
    data = d.get("data") or []
    dims = set()
    if check(len(data) == 2, "embeddings: %d items for 2 inputs" % len(data)):
        for i, e in enumerate(data):
            check(e.get("object") == "embedding" and e.get("index") == i, "embeddings: item %d %r"
                  % (i, {k: v for k, v in e.items() if k != "embedding"}))
            v = e.get("embedding")
            if check(isinstance(v, list) and len(v) > 0 and all(isinstance(x, (int, float)) for x in v),
                     "embeddings: item %d vector is not a list of numbers" % i):
                dims.add(len(v))
        check(dims == {256}, "embeddings: dimensions %r, expected the documented default 256" % dims)
    u = d.get("usage") or {}
    check(isinstance(u.get("prompt_tokens"), int) and u.get("prompt_tokens") > 0
          and u.get("total_tokens") == u.get("prompt_tokens"), "embeddings: usage %r" % u)
    check_rl_headers(h, "embeddings")
    status, _, body = post("/v1/embeddings", {"model": "mock-embed", "input": "one string"}, "k_main")
    d = json_or_none(body) or {}
    data = d.get("data") or []
    check(status == 200 and len(data) == 1 and len(data[0].get("embedding") or []) in dims,
          "embeddings single input: %s, %d items, dims %r vs %r" % (
              status, len(data), len((data or [{}])[0].get("embedding") or []), dims))
    status, _, body = post("/v1/embeddings", {"model": "mock-embed", "input": "x", "dimensions": 8}, "k_main")
    data = (json_or_none(body) or {}).get("data") or [{}]
    check(status == 200 and len(data[0].get("embedding") or []) == 8,
          "embeddings dimensions 8: %s, %r" % (status, body[:200]))
    check_error(post("/v1/embeddings", {"model": "mock-embed"}, "k_main"), 400, param="input",
                what="embeddings without input")


def test_models():
    status, h, body = NODE.request("GET", "/v1/models", key="k_main")
    check(status == 200, "models: status %s" % status)
    d = json_or_none(body) or {}
    check(d.get("object") == "list", "models: object %r" % d.get("object"))
    data = d.get("data") or []
    check(len(data) >= 1, "models: empty list")
    for m in data:
        check(isinstance(m.get("id"), str) and m.get("object") == "model"
              and isinstance(m.get("created"), int) and isinstance(m.get("owned_by"), str),
              "models: entry %r" % m)
    check_rl_headers(h, "models")


# --- rate-limit headers and 429s -----------------------------------------------------------

def test_ratelimit_headers_and_refund():
    c = NODE.conn()
    try:
        prompt = 10  # "hello there"
        got_out = []
        for i in range(1, 6):
            status, h, body = do_request(c, "POST", "/v1/chat/completions",
                                         chat_body("hello there", max_tokens=100), key="k_hdr")
            check(status == 200, "hdr #%d: status %s %r" % (i, status, body[:200]))
            check_rl_headers(h, "hdr #%d" % i)
            check(hint(h, "x-ratelimit-limit-requests") == 1000, "limit-requests %r" % h.get("x-ratelimit-limit-requests"))
            check(hint(h, "x-ratelimit-remaining-requests") == 1000 - i,
                  "hdr #%d: remaining-requests %r, expected %d" % (i, h.get("x-ratelimit-remaining-requests"), 1000 - i))
            check(hint(h, "x-ratelimit-limit-input-tokens") == 100000, "limit-input %r" % h.get("x-ratelimit-limit-input-tokens"))
            check(hint(h, "x-ratelimit-remaining-input-tokens") == 100000 - i * prompt,
                  "hdr #%d: remaining-input-tokens %r, expected %d"
                  % (i, h.get("x-ratelimit-remaining-input-tokens"), 100000 - i * prompt))
            check(hint(h, "x-ratelimit-limit-output-tokens") == 50000, "limit-output %r" % h.get("x-ratelimit-limit-output-tokens"))
            got_out.append(hint(h, "x-ratelimit-remaining-output-tokens"))
            u = (json_or_none(body) or {}).get("usage") or {}
            check(u.get("completion_tokens") == 5, "hdr #%d: completion_tokens %r" % (i, u.get("completion_tokens")))
        # Request i reserved 100 and used 5. Its own response may show the remaining after the
        # charge (reservation) or after reconciliation; earlier requests must be refunded.
        for i, rem in enumerate(got_out, 1):
            ok = {50000 - (i - 1) * 5 - 100, 50000 - i * 5}
            check(rem in ok, "hdr #%d: remaining-output-tokens %r, expected one of %s (no refund would be %d)"
                  % (i, rem, sorted(ok), 50000 - i * 100))
    finally:
        c.close()

    # The reservation is max_tokens x n.
    status, h, _ = post("/v1/chat/completions", chat_body("hello there", max_tokens=100, n=2), "k_n")
    rem = hint(h, "x-ratelimit-remaining-output-tokens")
    check(status == 200 and rem in (50000 - 200, 50000 - 10),
          "n=2 reservation: remaining-output-tokens %r, expected 49800 (reserved) or 49990 (reconciled)" % rem)
    status, h, _ = post("/v1/chat/completions", chat_body("hello there", max_tokens=100, n=2), "k_n")
    rem = hint(h, "x-ratelimit-remaining-output-tokens")
    check(status == 200 and rem in (50000 - 10 - 200, 50000 - 20),
          "n=2 refund: remaining-output-tokens %r, expected 49790 or 49980" % rem)


def test_429_rpm():
    c = NODE.conn()
    try:
        for i in range(3):
            status, h, body = do_request(c, "POST", "/v1/chat/completions", chat_body(max_tokens=5), key="k_rpm")
            check(status == 200, "rpm #%d: status %s %r" % (i + 1, status, body[:200]))
            check(hint(h, "x-ratelimit-remaining-requests") == 2 - i, "rpm #%d remaining %r" % (i + 1, h.get("x-ratelimit-remaining-requests")))
        resp = do_request(c, "POST", "/v1/chat/completions", chat_body(max_tokens=5), key="k_rpm")
        check_429(resp, "requests", lambda m: "RPM" in m, 3, 3, 1, "rpm 4th")
        check(hint(resp[1], "x-ratelimit-remaining-requests") == 0, "rpm 429: remaining %r" % resp[1].get("x-ratelimit-remaining-requests"))
        # A denied request charges nothing: the input tokens of the 4th are not counted.
        check(hint(resp[1], "x-ratelimit-remaining-input-tokens") == 100000 - 3 * 10,
              "rpm 429: remaining-input-tokens %r, expected %d" % (resp[1].get("x-ratelimit-remaining-input-tokens"), 100000 - 30))
        resp = do_request(c, "POST", "/v1/completions", {"model": "m", "prompt": "x"}, key="k_rpm")
        check_429(resp, "requests", lambda m: "RPM" in m, 3, 3, 1, "rpm on /v1/completions")
    finally:
        c.close()


def test_429_input_tpm():
    big = "z" * 1000  # 4 + 250 + 3 = 257 > 200: can never fit
    resp = post("/v1/chat/completions", chat_body(big, max_tokens=5), "k_in")
    err = check_error(resp, 429, what="input never fits")
    check("Request too large" in err.get("message", ""), "input never fits: message %r" % err.get("message"))
    check("input" in err.get("message", "").lower(), "input never fits: message does not name input: %r" % err.get("message"))
    check("retry-after" not in resp[1] and "retry-after-ms" not in resp[1],
          "input never fits: has retry-after %r/%r" % (resp[1].get("retry-after"), resp[1].get("retry-after-ms")))
    content = "w" * 400  # 107 tokens
    status, h, body = post("/v1/chat/completions", chat_body(content, max_tokens=5), "k_in")
    check(status == 200, "input tpm #1: status %s %r" % (status, body[:200]))
    check(hint(h, "x-ratelimit-remaining-input-tokens") == 93,
          "input tpm #1: remaining-input %r, expected 93 (the too-large request charged nothing)"
          % h.get("x-ratelimit-remaining-input-tokens"))
    resp = post("/v1/chat/completions", chat_body(content, max_tokens=5), "k_in")
    check_429(resp, "tokens", lambda m: re.search(r"input", m, re.I) and "TPM" in m
              and not re.search(r"output", m, re.I), 200, 107, 107, "input tpm #2")
    status, _, _ = post("/v1/chat/completions", chat_body("a" * 100, max_tokens=5), "k_in")
    check(status == 200, "input tpm: a 32-token request still fits in 93: status %s" % status)


def test_429_output_tpm():
    content = "q" * 1000  # 257 prompt tokens: the mock uses the whole cap of 60
    status, h, body = post("/v1/chat/completions", chat_body(content, max_tokens=60), "k_out")
    check(status == 200, "output tpm #1: status %s %r" % (status, body[:200]))
    check_usage((json_or_none(body) or {}).get("usage"), 257, 60, "output tpm #1")
    resp = post("/v1/chat/completions", chat_body(content, max_tokens=60), "k_out")
    check_429(resp, "tokens", lambda m: re.search(r"output", m, re.I) and "TPM" in m, 100, 60, 60,
              "output tpm #2")
    status, _, _ = post("/v1/chat/completions", chat_body(content, max_tokens=40), "k_out")
    check(status == 200, "output tpm: 40 more still fit in 100: status %s" % status)


def test_429_never_fits():
    resp = post("/v1/chat/completions", chat_body(max_tokens=101), "k_big")
    err = check_error(resp, 429, what="output never fits")
    check("Request too large" in err.get("message", ""), "never fits: message %r" % err.get("message"))
    check("retry-after" not in resp[1] and "retry-after-ms" not in resp[1],
          "never fits: retry-after %r / retry-after-ms %r present"
          % (resp[1].get("retry-after"), resp[1].get("retry-after-ms")))
    check_rl_headers(resp[1], "never fits")
    # n multiplies the reservation: 60 x 2 = 120 > 100.
    err = check_error(post("/v1/chat/completions", chat_body(max_tokens=60, n=2), "k_big"), 429,
                      what="never fits via n")
    check("Request too large" in err.get("message", ""), "never fits via n: message %r" % err.get("message"))
    # Nothing was charged by the refusals: the whole limit is still there.
    status, h, _ = post("/v1/chat/completions", chat_body(max_tokens=100), "k_big")
    check(status == 200, "exactly the limit fits: status %s" % status)
    check(hint(h, "x-ratelimit-remaining-requests") == 999, "never fits charged requests: %r"
          % h.get("x-ratelimit-remaining-requests"))


def test_unknown_keys_default():
    keys = {"tiers": {"default": {"rpm": 77, "input_tpm": 5000, "output_tpm": 4000}},
            "keys": {"listed": {"rpm": 5, "input_tpm": 500, "output_tpm": 400}},
            "unknown_keys": "default"}
    with harness.tracked(harness.Node(keys)) as n:
        rnd = "rnd-%d-%s" % (os.getpid(), os.urandom(6).hex())
        status, h, body = n.request("POST", "/v1/chat/completions", chat_body(max_tokens=5), key=rnd)
        check(status == 200, "unknown_keys default: status %s %r" % (status, body[:200]))
        check(h.get("x-ratelimit-limit-requests") == "77", "unknown key limit-requests %r, expected the default tier's 77"
              % h.get("x-ratelimit-limit-requests"))
        check(h.get("x-ratelimit-remaining-requests") == "76", "unknown key remaining %r" % h.get("x-ratelimit-remaining-requests"))
        # Each unknown key has its own window.
        status, h, _ = n.request("POST", "/v1/chat/completions", chat_body(max_tokens=5), key=rnd + "x")
        check(status == 200 and h.get("x-ratelimit-remaining-requests") == "76",
              "second unknown key: %s remaining %r" % (status, h.get("x-ratelimit-remaining-requests")))
        status, h, _ = n.request("POST", "/v1/chat/completions", chat_body(max_tokens=5), key="listed")
        check(status == 200 and h.get("x-ratelimit-limit-requests") == "5", "listed key keeps its limits: %r"
              % h.get("x-ratelimit-limit-requests"))
        check_error(n.request("POST", "/v1/chat/completions", chat_body()), 401, what="default policy, no auth")


# --- connection handling ---------------------------------------------------------------------

def test_keep_alive():
    c = NODE.conn()
    try:
        status, _, _ = do_request(c, "GET", "/v1/models", key="k_main")
        addr = harness.sock_name(c)
        check(status == 200 and addr is not None, "keep-alive: first request %s" % status)
        seq = [("POST", "/v1/chat/completions", chat_body(max_tokens=3), 200),
               ("POST", "/v1/completions", {"model": "m", "prompt": "hi"}, 200),
               ("GET", "/v1/nope", None, 404),
               ("POST", "/v1/chat/completions", "{bad", 400),
               ("POST", "/v1/embeddings", {"model": "e", "input": "x"}, 200),
               ("GET", "/healthz", None, 200),
               ("POST", "/v1/chat/completions", chat_body(max_tokens=3, stream=True), 200)]
        for method, path, body, want in seq:
            status, h, _ = do_request(c, method, path, body, key="k_main")
            check(status == want, "keep-alive %s %s: %s, expected %s" % (method, path, status, want))
            check(h.get("connection", "").lower() != "close", "keep-alive %s %s: Connection: close" % (method, path))
            check(harness.sock_name(c) == addr, "keep-alive: the connection was reopened after %s %s" % (method, path))
    finally:
        c.close()


def split_responses(raw):
    """Splits concatenated HTTP/1.1 responses with Content-Length bodies: [(status, body)]."""
    out = []
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        if not sep:
            break
        status = int(head.split(b" ", 2)[1])
        m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        n = int(m.group(1)) if m else 0
        out.append((status, rest[:n]))
        raw = rest[n:]
    return out


def test_pipelining_order():
    reqs = b""
    plan = [(b"GET", b"/v1/models", None, 200), (b"GET", b"/v1/nope", None, 404),
            (b"POST", b"/v1/chat/completions", json.dumps(chat_body(max_tokens=2)).encode(), 200),
            (b"GET", b"/healthz", None, 200),
            (b"POST", b"/v1/chat/completions", b"{oops", 400)]
    for i, (m, p, b, _) in enumerate(plan):
        last = i == len(plan) - 1
        reqs += m + b" " + p + b" HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer k_main\r\n"
        if b is not None:
            reqs += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(b)
        reqs += (b"Connection: close\r\n" if last else b"") + b"\r\n" + (b or b"")
    raw = harness.raw_exchange(NODE.port, reqs, timeout=10.0)
    got = [s for s, _ in split_responses(raw)]
    check(got == [w for *_, w in plan], "pipelined responses %r, expected in request order %r"
          % (got, [w for *_, w in plan]))

    # Ten pipelined admissions on a fresh key, sent in one write: the responses come back in
    # request order, each one charged once (remaining 999, 998, ...; prompts of growing size
    # tell them apart).
    reqs = b""
    for i in range(10):
        b = json.dumps(chat_body("p" * (4 * i + 4), max_tokens=1)).encode()
        reqs += (b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer k_pipe\r\n"
                 b"Content-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
                 % (len(b), b"Connection: close\r\n" if i == 9 else b"")) + b
    raw = harness.raw_exchange(NODE.port, reqs, timeout=10.0)
    resp = split_responses(raw)
    got = [(s, ((json_or_none(b) or {}).get("usage") or {}).get("prompt_tokens")) for s, b in resp]
    check(got == [(200, 4 + (i + 1) + 3) for i in range(10)],
          "pipelined admissions: (status, prompt_tokens) %r, expected in request order" % got)
    rem = [int(m.group(1)) for m in re.finditer(rb"(?im)^x-ratelimit-remaining-requests:\s*(\d+)", raw)]
    check(rem == list(range(999, 989, -1)), "pipelined admissions: remaining-requests %r, expected 999..990" % rem)


def test_chunked_request_body():
    body = json.dumps(chat_body("hello there", max_tokens=4)).encode()
    c = NODE.conn()
    try:
        c.request("POST", "/v1/chat/completions", body=iter([body[:10], body[10:30], body[30:]]),
                  headers={"Authorization": "Bearer k_main", "Content-Type": "application/json"},
                  encode_chunked=True)
        r = c.getresponse()
        d = json_or_none(r.read()) or {}
        check(r.status == 200, "chunked request body: status %s" % r.status)
        check_usage(d.get("usage"), 10, 4, "chunked request body")
    finally:
        c.close()


def test_http10_closes():
    raw = harness.raw_exchange(NODE.port, b"GET /healthz HTTP/1.0\r\n\r\n", timeout=10.0)
    check(raw.startswith(b"HTTP/1.") and b" 200 " in raw.split(b"\r\n")[0],
          "HTTP/1.0 /healthz: %r" % raw[:100])


def test_server_limits():
    keys = {"tiers": {"default": TIER}, "keys": {"k": {"tier": "default"}}, "unknown_keys": "reject"}
    args = ["--max-body-bytes", "2048", "--max-header-bytes", "1024", "--read-timeout-ms", "600",
            "--idle-timeout-ms", "800", "--max-connections", "4"]
    with harness.tracked(harness.Node(keys, extra_args=args)) as n:
        # 413: body over the limit, and a declared length over the limit (sent without body).
        big = json.dumps(chat_body("x" * 4000, max_tokens=3))
        check_error(n.request("POST", "/v1/chat/completions", big, key="k",
                              headers={"Content-Type": "application/json"}), 413, what="body 4 KB > 2 KB")
        raw = harness.raw_exchange(n.port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\n"
                                   b"Authorization: Bearer k\r\nContent-Length: 10000000000\r\n\r\n", timeout=10.0)
        check(raw.split(b"\r\n")[0].split(b" ")[1:2] == [b"413"], "declared 10 GB body: %r" % raw[:100])
        ok = json.dumps(chat_body("x" * 1000, max_tokens=3))
        status, _, _ = n.request("POST", "/v1/chat/completions", ok, key="k", headers={"Content-Type": "application/json"})
        check(status == 200, "body under the limit: status %s" % status)
        # 431: headers over the limit.
        check_error(n.request("GET", "/v1/models", key="k", headers={"X-Pad": "p" * 2000}), 431,
                    what="2 KB header > 1 KB")
        # 408: a request that stops half-way.
        t0 = time.monotonic()
        raw = harness.raw_exchange(n.port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\n"
                                   b"Authorization: Bearer k\r\nContent-Length: 100\r\n\r\n{\"model\"", timeout=15.0)
        el = time.monotonic() - t0
        check(raw.split(b"\r\n")[0].split(b" ")[1:2] == [b"408"], "stalled request: %r" % raw[:100])
        check(el >= 0.5, "stalled request answered after %.2fs, before the 600 ms read timeout" % el)
        check(el < 14, "stalled request: connection not closed after the 408 (%.1fs)" % el)
        # Idle keep-alive connection closed after ~800 ms, not before.
        s = socket.create_connection(("127.0.0.1", n.port), timeout=15.0)
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            got = b""
            while b"\r\n\r\n" not in got:
                got += s.recv(4096)
            t0 = time.monotonic()
            try:
                while s.recv(4096):
                    pass
                closed = True
            except socket.timeout:
                closed = False
            el = time.monotonic() - t0
            check(closed, "idle connection not closed within 15s (idle timeout 800 ms)")
            check(el >= 0.6, "idle connection closed after %.2fs, before the 800 ms idle timeout" % el)
        finally:
            s.close()
        # Max connections: 4 open and served; the 5th gets 503 and is closed.
        held = []
        try:
            for i in range(4):
                s = socket.create_connection(("127.0.0.1", n.port), timeout=10.0)
                held.append(s)
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                got = b""
                while b"\r\n\r\n" not in got:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    got += chunk
                check(b" 200 " in got.split(b"\r\n")[0], "connection %d of 4: %r" % (i + 1, got[:80]))
            raw = harness.raw_exchange(n.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", timeout=10.0)
            check(raw.split(b"\r\n")[0].split(b" ")[1:2] == [b"503"], "5th connection: %r" % raw[:100])
        finally:
            for s in held:
                s.close()
        # Capacity comes back once they are closed.
        harness.wait_until(lambda: n.request("GET", "/healthz")[0] == 200, timeout=10.0,
                           what="a new connection after closing the held ones")


def test_start():
    global NODE
    NODE = harness.tracked(harness.Node(KEYS)).start()


def test_clean_exit():
    rc = NODE.stop()
    check(rc == 0, "llmlimitd exit code %s after SIGTERM; log tail:\n%s" % (rc, NODE.read_log()[-3000:]))


if __name__ == "__main__":
    harness.run([test_start, test_auth_errors, test_404_405, test_400_bad_json, test_400_invalid_fields,
                 test_chat_completion_shape_and_usage, test_tier_default_max_tokens, test_stream,
                 test_completions, test_embeddings, test_models, test_ratelimit_headers_and_refund,
                 test_429_rpm, test_429_input_tpm, test_429_output_tpm, test_429_never_fits,
                 test_keep_alive, test_pipelining_order, test_chunked_request_body, test_http10_closes,
                 test_clean_exit, test_unknown_keys_default, test_server_limits])
