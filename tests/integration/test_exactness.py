#!/usr/bin/env python3
"""Exactness of admission against one real llmlimitd.

(a) A key with rpm 100 gets 2,000 requests spread over 30 s from several keep-alive
    connections: exactly 100 are admitted, 1,900 refused, and the admitted ones saw every
    remaining-requests value 99..0 exactly once (admission is atomic).
(b) A key with input_tpm 3000 / output_tpm 2000 gets a random mix for ~28 s. The daemon's
    admission log (its own clock) is then audited: over every 60 s window ending at an admission,
    admitted input <= 3000 and reconciled output <= 2000; the log matches what the client saw.
"""
import collections
import math
import os
import random
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, chat_body, do_request, json_or_none  # noqa: E402

RPM_TOTAL = 2000
RPM_LIMIT = 100
RPM_SECONDS = 30.0
IN_TPM, OUT_TPM = 3000, 2000
MIX_SECONDS = 28.0
MIX_RATE = 20.0  # requests per second

KEYS = {
    "tiers": {"default": {"rpm": 1000, "input_tpm": 100000, "output_tpm": 50000}},
    "keys": {
        "k_rpm": {"rpm": RPM_LIMIT, "input_tpm": None, "output_tpm": None},
        "k_tok": {"rpm": 1000000, "input_tpm": IN_TPM, "output_tpm": OUT_TPM},
    },
    "unknown_keys": "reject",
}

NODE = None
ADMISSION_LOG = None
ADMITTED = []  # k_tok's 200s as the client saw them: (input, reserved, completion)


def run_paced(total, seconds, threads, send):
    """Sends `total` requests on a fixed schedule (request i at start + i*seconds/total) from
    `threads` keep-alive connections. send(conn, i) returns a record. Returns (records, span)
    where span is the time from the first send to the last response."""
    lock = threading.Lock()
    nxt = [0]
    records = [None] * total
    start = time.monotonic() + 0.2
    done_at = [start]

    def worker():
        c = NODE.conn(timeout=30.0)
        try:
            while True:
                with lock:
                    i = nxt[0]
                    nxt[0] += 1
                if i >= total:
                    return
                delay = start + i * seconds / total - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing to a schedule, not waiting for a condition
                try:
                    records[i] = send(c, i)
                except Exception as e:  # noqa: BLE001 - recorded and reported
                    records[i] = ("error", repr(e))
                    c.close()
                    c = NODE.conn(timeout=30.0)
                with lock:
                    done_at[0] = max(done_at[0], time.monotonic())
        finally:
            c.close()

    ts = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=seconds + 120)
        check(not t.is_alive(), "client thread still running %.0fs after its schedule" % (seconds + 120))
    return records, done_at[0] - start


def test_start():
    global NODE, ADMISSION_LOG
    NODE = harness.tracked(harness.Node(KEYS))
    ADMISSION_LOG = os.path.join(NODE.dir, "admissions.log")
    NODE.extra_args += ["--admission-log", ADMISSION_LOG]
    NODE.start()


def test_rpm_exact():
    body = chat_body("ping", max_tokens=1)

    def send(c, i):
        s, h, b = do_request(c, "POST", "/v1/chat/completions", body, key="k_rpm")
        return (s, h.get("x-ratelimit-remaining-requests"), h.get("retry-after"), b[:200])

    records, span = run_paced(RPM_TOTAL, RPM_SECONDS, 4, send)
    check(span < 58.0, "the %d requests took %.1fs: not all inside one 60 s window, result inconclusive"
          % (RPM_TOTAL, span))
    errors = [r for r in records if r is None or r[0] == "error"]
    check(not errors, "%d requests failed at the transport level, e.g. %r" % (len(errors), errors[:3]))
    by_status = collections.Counter(r[0] for r in records if r and r[0] != "error")
    print("  rpm: %s in %.1fs" % (dict(by_status), span))
    check(by_status[200] == RPM_LIMIT, "%d admitted, expected exactly %d" % (by_status[200], RPM_LIMIT))
    check(by_status[429] == RPM_TOTAL - RPM_LIMIT, "%d refused, expected exactly %d (statuses %r)"
          % (by_status[429], RPM_TOTAL - RPM_LIMIT, dict(by_status)))
    rem = sorted(int(r[1]) for r in records if r and r[0] == 200 and r[1] is not None and r[1].isdigit())
    check(rem == list(range(RPM_LIMIT)), "remaining-requests of the admitted requests are not 0..99 once each: %r"
          % collections.Counter(rem).most_common(5))
    bad429 = [r for r in records if r and r[0] == 429 and not (r[2] and r[2].isdigit() and 1 <= int(r[2]) <= 61
                                                              and r[1] == "0")]
    check(not bad429, "%d 429s without retry-after in [1,61] / remaining 0, e.g. %r" % (len(bad429), bad429[:2]))


def est_chat(content):
    return 4 + math.ceil(len(content.encode()) / 4) + 3


def test_token_windows_audit():
    seed = int(os.environ.get("LLMLIMIT_SEED", str(int(time.time()))))
    print("  mix seed %d (LLMLIMIT_SEED to replay)" % seed)
    rng = random.Random(seed)
    total = int(MIX_SECONDS * MIX_RATE)
    plan = []
    for _ in range(total):
        size = rng.choice([rng.randint(1, 40), rng.randint(40, 400), rng.randint(400, 1200)])
        # n multiplies both the reservation and the completion, so output can bind as well as
        # input; max_tokens x n stays <= 1800 < output_tpm (no "never fits" here).
        n = rng.choice([1, 1, 2, 4])
        plan.append({"chat": rng.random() < 0.8, "size": size, "n": n,
                     "max_tokens": rng.choice([rng.randint(1, 20), rng.randint(20, 1800 // n)])})

    def send(c, i):
        p = plan[i]
        text = "t" * p["size"]
        if p["chat"]:
            b = chat_body(text, max_tokens=p["max_tokens"], n=p["n"])
            s, h, body = do_request(c, "POST", "/v1/chat/completions", b, key="k_tok")
        else:
            b = {"model": "mock-gpt", "prompt": text, "max_tokens": p["max_tokens"], "n": p["n"]}
            s, h, body = do_request(c, "POST", "/v1/completions", b, key="k_tok")
        return (s, json_or_none(body))

    records, span = run_paced(total, MIX_SECONDS, 2, send)
    admitted = ADMITTED
    stats = collections.Counter()
    for i, r in enumerate(records):
        p = plan[i]
        if r is None or r[0] == "error":
            check(False, "request %d failed: %r" % (i, r))
            continue
        s, d = r
        stats[s] += 1
        if s == 200:
            u = (d or {}).get("usage") or {}
            pt, ct = u.get("prompt_tokens"), u.get("completion_tokens")
            if not check(isinstance(pt, int) and isinstance(ct, int), "request %d: usage %r" % (i, u)):
                continue
            if p["chat"]:
                check(pt == est_chat("t" * p["size"]), "request %d: prompt_tokens %d, expected %d"
                      % (i, pt, est_chat("t" * p["size"])))
            check(ct <= p["max_tokens"] * p["n"], "request %d: completion %d over the cap %d" % (i, ct, p["max_tokens"] * p["n"]))
            admitted.append((pt, p["max_tokens"] * p["n"], ct))
        elif s == 429:
            err = (d or {}).get("error") or {}
            m = re.search(r"Limit (\d+), Used (\d+), Requested (\d+)", err.get("message", ""))
            if check(m is not None, "request %d: 429 message %r" % (i, err.get("message"))):
                lim, used, req = map(int, m.groups())
                check(used + req > lim, "request %d: refused although Used %d + Requested %d <= Limit %d"
                      % (i, used, req, lim))
                stats["429 " + ("input" if re.search("input", err["message"], re.I) else
                                "output" if re.search("output", err["message"], re.I) else "other")] += 1
        else:
            check(False, "request %d: unexpected status %s %r" % (i, s, d))
    print("  mix: %s in %.1fs" % (dict(stats), span))
    check(span < 58.0, "the mix took %.1fs, longer than planned" % span)
    check(stats[200] >= 5 and stats[429] >= 20, "the mix did not exercise the limits: %r" % dict(stats))

    # The log is flushed at least every second: every admission and every non-zero
    # reconciliation appears without the daemon having to exit.
    want_j = len([a for a in admitted if a[2] != a[1]])

    def complete():
        lines = lines_for("k_tok")
        return (len([x for x in lines if x[0] == "A"]) >= len(admitted)
                and len([x for x in lines if x[0] == "J" and len(x) > 4 and x[4] != "0"]) >= want_j)
    try:
        harness.wait_until(complete, timeout=10.0, what="%d A and %d J lines for k_tok in the admission log"
                           % (len(admitted), want_j))
    except AssertionError as e:
        check(False, str(e))
    audit(lines_for("k_tok"), admitted, "while running")


def lines_for(key):
    try:
        with open(ADMISSION_LOG) as f:
            text = f.read()
    except OSError:
        return []
    return [ln.split() for ln in text.splitlines() if len(ln.split()) > 2 and ln.split()[2] == key]


def audit(lines, admitted, when):
    """Checks the admission log of k_tok against the limits and against what the client saw."""
    events = []  # ("A", t, input, reserved, bucket) / ("J", t, bucket, delta)
    for f in lines:
        try:
            if f[0] == "A" and len(f) == 7:
                events.append(("A", int(f[1]), int(f[4]), int(f[5]), int(f[6]), int(f[3])))
            elif f[0] == "J" and len(f) == 5:
                events.append(("J", int(f[1]), int(f[3]), int(f[4])))
            else:
                check(False, "admission log: malformed line %r" % " ".join(f))
        except ValueError:
            check(False, "admission log: malformed line %r" % " ".join(f))
    a_ev = [e for e in events if e[0] == "A"]
    j_ev = [e for e in events if e[0] == "J"]
    check(len(a_ev) == len(admitted), "%s: %d A lines, but the client got %d 200s" % (when, len(a_ev), len(admitted)))
    check(all(e[5] == 1 for e in a_ev), "%s: an A line with requests != 1" % when)
    ts = [e[1] for e in events]
    check(ts == sorted(ts), "%s: t_ms goes backwards in the admission log" % when)
    check(collections.Counter((e[2], e[3]) for e in a_ev) == collections.Counter((a[0], a[1]) for a in admitted),
          "%s: (input, reserved) of A lines differ from the client's 200s" % when)
    want_d = collections.Counter(a[2] - a[1] for a in admitted if a[2] != a[1])
    got_d = collections.Counter(e[3] for e in j_ev if e[3] != 0)
    check(want_d == got_d, "%s: J deltas %r differ from the client's completion - reserved %r"
          % (when, sorted(got_d.elements())[:20], sorted(want_d.elements())[:20]))

    # Replay in log order. A J line names only the bucket of its admission, so it is attributed
    # to an unreconciled admission of that bucket that can absorb it (reserved + delta >= 0),
    # the smallest such. Any such attribution is sound: the daemon counts whole buckets for at
    # least 60 s, and every admission's reconciled output is >= 0, so a correct daemon keeps
    # every window sum computed this way <= the limit, whichever admission got the delta.
    # At every admission, sum the admissions inside (T - 60 s, T].
    adm = []  # [t, input, reserved, delta_so_far]
    pending = collections.defaultdict(list)
    worst_in = worst_out = 0
    for e in events:
        if e[0] == "A":
            _, t, inp, res, bucket, _ = e
            rec = [t, inp, res, 0]
            adm.append(rec)
            pending[bucket].append(rec)
            win = [a for a in adm if a[0] > t - 60000]
            s_in = sum(a[1] for a in win)
            s_out = sum(a[2] + a[3] for a in win)
            worst_in, worst_out = max(worst_in, s_in), max(worst_out, s_out)
            check(s_in <= IN_TPM, "%s: window ending at t=%d holds %d input tokens > %d" % (when, t, s_in, IN_TPM))
            check(s_out <= OUT_TPM, "%s: window ending at t=%d holds %d output tokens > %d"
                  % (when, t, s_out, OUT_TPM))
        else:
            _, t, bucket, delta = e
            check(delta <= 0, "%s: J delta %d > 0, but the mock never exceeds its cap" % (when, delta))
            fits = [r for r in pending[bucket] if r[2] + delta >= 0]
            if not check(fits, "%s: J at t=%d (bucket %d, delta %d) matches no unreconciled admission "
                         "of that bucket" % (when, t, bucket, delta)):
                continue
            rec = min(fits, key=lambda r: r[2])
            pending[bucket].remove(rec)
            rec[3] += delta
    final_out = sum(a[2] + a[3] for a in adm)
    check(final_out <= OUT_TPM, "%s: reconciled output %d > %d" % (when, final_out, OUT_TPM))
    print("  audit %s: %d A, %d J; peak window input %d/%d, output %d/%d, reconciled output %d"
          % (when, len(a_ev), len(j_ev), worst_in, IN_TPM, worst_out, OUT_TPM, final_out))
    return len(a_ev)


def test_clean_exit_and_final_log():
    rc = NODE.stop()
    check(rc == 0, "exit code %s after SIGTERM; log tail:\n%s" % (rc, NODE.read_log()[-3000:]))
    # Flushed at exit: k_rpm has exactly its 100 admissions, each with one request.
    with open(ADMISSION_LOG) as f:
        lines = [ln.split() for ln in f.read().splitlines()]
    a_rpm = [x for x in lines if x and x[0] == "A" and len(x) > 2 and x[2] == "k_rpm"]
    check(len(a_rpm) == RPM_LIMIT, "admission log has %d A lines for k_rpm, expected %d" % (len(a_rpm), RPM_LIMIT))
    check(all(x[0] in ("A", "J") for x in lines if x), "admission log: lines other than A/J: %r"
          % [x for x in lines if x and x[0] not in ("A", "J")][:3])
    audit(lines_for("k_tok"), ADMITTED, "after exit")



if __name__ == "__main__":
    harness.run([test_start, test_rpm_exact, test_token_windows_audit, test_clean_exit_and_final_log])
