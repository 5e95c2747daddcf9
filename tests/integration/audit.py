"""Shared by the exactness tests of one node and of a cluster: paced load, the mixed token
workload, and the audit of admission logs against the limits over every 60 s window.

A single node is a cluster of one: every function takes a list of nodes (anything with
.conn(timeout)) and, for logs, a dict node id -> split admission-log lines."""
import collections
import threading
import time

from harness import chat_body, check, do_request, json_or_none


def run_paced(nodes, total, seconds, threads, send):
    """Sends `total` requests on a fixed schedule (request i at start + i*seconds/total), request
    i to nodes[i % len(nodes)], from `threads` workers holding one keep-alive connection per
    node. send(conn, i) returns a tuple. Returns (records, span): records[i] is
    (node index,) + send's tuple, or (node index, "error", repr); span runs from the first send
    to the last response."""
    lock = threading.Lock()
    nxt = [0]
    records = [None] * total
    start = time.monotonic() + 0.2
    done_at = [start]

    def worker():
        conns = [n.conn(timeout=30.0) for n in nodes]
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
                k = i % len(nodes)
                try:
                    records[i] = (k,) + send(conns[k], i)
                except Exception as e:  # noqa: BLE001 - recorded and reported
                    records[i] = (k, "error", repr(e))
                    conns[k].close()
                    conns[k] = nodes[k].conn(timeout=30.0)
                with lock:
                    done_at[0] = max(done_at[0], time.monotonic())
        finally:
            for c in conns:
                c.close()

    ts = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=seconds + 120)
        check(not t.is_alive(), "client thread still running %.0fs after its schedule" % (seconds + 120))
    return records, done_at[0] - start


def mix_plan(rng, total):
    """Random chat and completion requests: prompt sizes across three orders of magnitude, and
    n multiplying both the reservation and the completion so that output can bind as well as
    input; max_tokens x n stays <= 1800 (below the tests' output TPM: nothing "never fits")."""
    plan = []
    for _ in range(total):
        size = rng.choice([rng.randint(1, 40), rng.randint(40, 400), rng.randint(400, 1200)])
        n = rng.choice([1, 1, 2, 4])
        plan.append({"chat": rng.random() < 0.8, "size": size, "n": n,
                     "max_tokens": rng.choice([rng.randint(1, 20), rng.randint(20, 1800 // n)])})
    return plan


def mix_sender(plan, key):
    """send(conn, i) for run_paced: request i of the plan; returns (status, parsed body)."""
    def send(c, i):
        p = plan[i]
        text = "t" * p["size"]
        if p["chat"]:
            s, _, body = do_request(c, "POST", "/v1/chat/completions",
                                    chat_body(text, max_tokens=p["max_tokens"], n=p["n"]), key=key)
        else:
            s, _, body = do_request(c, "POST", "/v1/completions",
                                    {"model": "mock-gpt", "prompt": text, "max_tokens": p["max_tokens"],
                                     "n": p["n"]}, key=key)
        return (s, json_or_none(body))
    return send


def audit_windows(lines, admitted, in_tpm, out_tpm, when):
    """lines: node id -> that node's admission-log lines (split) for one key; admitted: node id ->
    [(input, reserved, completion)] of the 200s it answered. Per node, its A/J lines must match
    the 200s it answered. Merged (all nodes share CLOCK_MONOTONIC), every admission is replayed
    and the 60 s window ending at each one must hold <= in_tpm input and <= out_tpm reconciled
    output tokens. Returns (A lines in all, reconciled output of all admissions)."""
    events = []  # (t, node, "A", input, reserved, bucket) / (t, node, "J", bucket, delta)
    for node, node_lines in lines.items():
        a_lines = 0
        mine = []
        for f in node_lines:
            try:
                if f[0] == "A" and len(f) == 7:
                    check(int(f[3]) == 1, "%s: %s A line with requests != 1: %r" % (when, node, f))
                    mine.append((int(f[1]), node, "A", int(f[4]), int(f[5]), int(f[6])))
                    a_lines += 1
                elif f[0] == "J" and len(f) == 5:
                    mine.append((int(f[1]), node, "J", int(f[3]), int(f[4])))
                else:
                    check(False, "%s: %s admission log: malformed line %r" % (when, node, " ".join(f)))
            except ValueError:
                check(False, "%s: %s admission log: malformed line %r" % (when, node, " ".join(f)))
        adm = admitted.get(node, [])
        check(a_lines == len(adm), "%s: %s has %d A lines but answered %d 200s" % (when, node, a_lines, len(adm)))
        check(collections.Counter((e[3], e[4]) for e in mine if e[2] == "A")
              == collections.Counter((a[0], a[1]) for a in adm),
              "%s: %s: (input, reserved) of its A lines differ from its 200s" % (when, node))
        want_d = collections.Counter(a[2] - a[1] for a in adm if a[2] != a[1])
        got_d = collections.Counter(e[4] for e in mine if e[2] == "J" and e[4] != 0)
        check(want_d == got_d, "%s: %s: J deltas %r differ from completion - reserved %r"
              % (when, node, sorted(got_d.elements())[:20], sorted(want_d.elements())[:20]))
        ts = [e[0] for e in mine]
        check(ts == sorted(ts), "%s: %s: t_ms goes backwards in its admission log" % (when, node))
        events += mine
    events.sort(key=lambda e: e[0])  # stable: each node's own order is kept on equal times

    # A J line names only the bucket of its admission; it is attributed to an unreconciled
    # admission of the same node and bucket that can absorb it (reserved + delta >= 0), the
    # smallest such. Any such attribution is sound: the owner counts whole buckets for at least
    # 60 s and every admission's reconciled output is >= 0, so a correct limiter keeps every
    # window sum computed this way within the limit, whichever admission got the delta.
    adm, pending = [], collections.defaultdict(list)
    worst_in = worst_out = 0
    for e in events:
        if e[2] == "A":
            t, node, _, inp, res, bucket = e
            rec = [t, inp, res, 0]
            adm.append(rec)
            pending[(node, bucket)].append(rec)
            win = [a for a in adm if a[0] > t - 60000]
            s_in, s_out = sum(a[1] for a in win), sum(a[2] + a[3] for a in win)
            worst_in, worst_out = max(worst_in, s_in), max(worst_out, s_out)
            check(s_in <= in_tpm, "%s: window ending at t=%d (%s) holds %d input tokens > %d"
                  % (when, t, node, s_in, in_tpm))
            check(s_out <= out_tpm, "%s: window ending at t=%d (%s) holds %d output tokens > %d"
                  % (when, t, node, s_out, out_tpm))
        else:
            t, node, _, bucket, delta = e
            check(delta <= 0, "%s: J delta %d > 0, but the mock never exceeds its cap" % (when, delta))
            fits = [r for r in pending[(node, bucket)] if r[2] + delta >= 0]
            if not check(fits, "%s: %s J at t=%d (bucket %d, delta %d) matches none of its admissions"
                         % (when, node, t, bucket, delta)):
                continue
            rec = min(fits, key=lambda r: r[2])
            pending[(node, bucket)].remove(rec)
            rec[3] += delta
    final_out = sum(a[2] + a[3] for a in adm)
    print("  audit %s: %d A lines over %d logs; peak window input %d/%d, output %d/%d, reconciled output %d"
          % (when, len(adm), len(lines), worst_in, in_tpm, worst_out, out_tpm, final_out))
    return len(adm), final_out
