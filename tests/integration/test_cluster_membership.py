#!/usr/bin/env python3
"""Membership of a 5-node cluster of real llmlimitd processes on loopback, timed against the
targets of the cluster issue (default gossip timings):

- join: node 0 starts alone; nodes 1-4 start together, seeded with node 0 (node 3 names it as
  "localhost:PORT"). Join spread = process start -> every node's /cluster lists the node alive:
  <= 2 s for each node.
- healthy for 20 s: /cluster polled on every node and the gossip counters read: no member is
  ever reported dead (false suspicions are counted and printed).
- kill -9 of one node: every survivor reports it dead within 3 s.
- SIGTERM of one node: every survivor reports it "left" within 1 s, and never "dead".
- a new node joins the 3 remaining nodes while clients send requests round-robin to them:
  every response is a 200 or a 429 (no connection error, no 5xx), and the new node takes over
  some keys (it serves forwarded checks). Its seeds are the killed node, the node that left
  and one live node: any one live seed is enough.

The measured figures are printed for docs/.
"""
import collections
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, chat_body, do_request  # noqa: E402
from cluster import Cluster, ViewWatch  # noqa: E402

JOIN_MAX_S, DETECT_MAX_S, LEAVE_MAX_S = 2.0, 3.0, 1.0
HEALTHY_S = 20.0
LOAD_KEYS = ["load-%02d" % i for i in range(30)]

KEYS = {
    "tiers": {"default": {"rpm": 1000000, "input_tpm": 100000000, "output_tpm": 100000000}},
    "keys": {},
    "unknown_keys": "default",
}

C = None
WATCH = None
FIGURES = collections.OrderedDict()


def ids(nodes):
    return [n.node_id for n in nodes]


def gossip_counters(nodes):
    out = {}
    for n in nodes:
        out[n.node_id] = {k: n.metric("llmlimit_gossip_%s_total" % k)
                          for k in ("suspicions", "deaths", "refutations", "probe_failures", "leaves")}
    return out


def test_join_spread():
    global C, WATCH
    C = Cluster(5, KEYS, seed_hosts={3: "localhost"})
    first = C.nodes[0].start()
    WATCH = ViewWatch([first], interval=0.02).start()
    for n in C.nodes[1:]:
        WATCH.add(n)
    C.start_nodes(C.nodes[1:])
    check("localhost:" in ",".join(C.nodes[3].seeds), "node 3 was not seeded by host name: %r" % C.nodes[3].seeds)
    everyone = ids(C.nodes)

    def all_joined():
        return all(WATCH.all_seen(everyone, n.node_id, "alive") for n in C.nodes[1:])
    try:
        harness.wait_until(all_joined, timeout=15.0, interval=0.05, what="every node to list all 5 alive")
    except AssertionError as e:
        check(False, "%s\n%s" % (e, C.describe()))
    spreads = {}
    for n in C.nodes[1:]:
        t = WATCH.all_seen(everyone, n.node_id, "alive")
        if t is not None:
            spreads[n.node_id] = t - n.launched_at
    worst = max(spreads.values()) if spreads else float("nan")
    FIGURES["join spread (process start -> all 5 list it alive), worst / per node"] = \
        "%.3fs / %s" % (worst, ", ".join("%s %.3fs" % kv for kv in sorted(spreads.items())))
    print("  join spread: %s" % FIGURES[list(FIGURES)[-1]])
    for nid, s in spreads.items():
        check(s <= JOIN_MAX_S, "join of %s took %.3fs to reach every node (target %.1fs)" % (nid, s, JOIN_MAX_S))
    check(len(spreads) == 4, "only %r joined everywhere" % sorted(spreads))
    C.wait_converged(timeout=10.0)


def test_healthy_no_false_dead():
    before = gossip_counters(C.nodes)
    odd0 = len(WATCH.odd)
    rounds0 = WATCH.rounds
    t0 = time.monotonic()
    # Watching for HEALTHY_S seconds: the watcher thread polls all nodes meanwhile; the
    # condition checked here is only "a node died" (which ends the wait early, as a failure).
    try:
        harness.wait_until(lambda: any(not n.running() for n in C.nodes) or
                           time.monotonic() - t0 >= HEALTHY_S, timeout=HEALTHY_S + 5, interval=0.2,
                           what="the healthy period")
    except AssertionError as e:
        check(False, str(e))
    check(all(n.running() for n in C.nodes), "a node exited during the healthy period: %r"
          % [(n.node_id, n.proc.returncode) for n in C.nodes if not n.running()])
    after = gossip_counters(C.nodes)
    odd = WATCH.odd[odd0:]
    dead = [o for o in odd if o[3] in ("dead", "left")]
    suspect = [o for o in odd if o[3] == "suspect"]
    delta = {k: sum(after[n][k] - before[n][k] for n in after) for k in next(iter(after.values()))}
    FIGURES["healthy %.0fs, 5 nodes: false suspicions / deaths (counters); suspect sightings in %d polls"
            % (HEALTHY_S, WATCH.rounds - rounds0)] = "%d / %d; %d" % (delta["suspicions"], delta["deaths"], len(suspect))
    print("  healthy %.0fs: counters %s; /cluster polled %d rounds, %d suspect sightings %s"
          % (HEALTHY_S, delta, WATCH.rounds - rounds0, len(suspect),
             sorted({(o[1], o[2]) for o in suspect})[:10]))
    check(not dead, "a healthy member was reported dead/left: %r" % dead[:5])
    check(delta["deaths"] == 0, "llmlimit_gossip_deaths_total rose by %d while all nodes were healthy: %r"
          % (delta["deaths"], {n: after[n]["deaths"] - before[n]["deaths"] for n in after}))
    check(WATCH.rounds - rounds0 >= HEALTHY_S * 2,
          "only %d poll rounds in %.0fs: the watch saw too little" % (WATCH.rounds - rounds0, HEALTHY_S))
    C.wait_converged(timeout=5.0)


def test_kill9_detection():
    victim = C.nodes[4]
    survivors = [n for n in C.nodes if n is not victim]
    t_kill = time.monotonic()
    victim.kill9()
    WATCH.remove(victim)

    def detected():
        return WATCH.all_seen(ids(survivors), victim.node_id, "dead", after=t_kill)
    try:
        harness.wait_until(detected, timeout=15.0, interval=0.02, what="every survivor to report %s dead" % victim.node_id)
    except AssertionError as e:
        check(False, "%s\n%s" % (e, C.describe()))
    t = detected()
    if t is not None:
        per = {o: (WATCH.seen(o, victim.node_id, "dead") or 0) - t_kill for o in ids(survivors)}
        sus = [WATCH.seen(o, victim.node_id, "suspect") for o in ids(survivors)]
        sus = [s - t_kill for s in sus if s and s >= t_kill]
        FIGURES["kill -9 detection (kill -> every survivor says dead)"] = "%.3fs (first suspect seen after %s)" % (
            t - t_kill, "%.3fs" % min(sus) if sus else "-")
        print("  detection: %.3fs; per survivor %s" % (t - t_kill, ", ".join("%s %.3fs" % kv for kv in sorted(per.items()))))
        check(t - t_kill <= DETECT_MAX_S, "killed node reported dead everywhere after %.3fs (target %.1fs)"
              % (t - t_kill, DETECT_MAX_S))
    # The ring drops it: its keys now belong to live nodes.
    for n in survivors:
        v = n.view()
        check(v.get("ring_size") == 4, "%s: ring_size %r after the death, expected 4" % (n.node_id, v.get("ring_size")))


def test_sigterm_leave():
    leaver = C.nodes[3]
    survivors = [n for n in C.nodes[:3]]
    t_term = time.monotonic()
    leaver.signal(signal.SIGTERM)

    def left():
        return WATCH.all_seen(ids(survivors), leaver.node_id, "left", after=t_term)
    try:
        harness.wait_until(left, timeout=10.0, interval=0.02, what="every survivor to report %s left" % leaver.node_id)
    except AssertionError as e:
        check(False, "%s\n%s" % (e, C.describe()))
    t = left()
    if t is not None:
        FIGURES["SIGTERM -> every survivor says left"] = "%.3fs" % (t - t_term)
        print("  leave: %.3fs" % (t - t_term))
        check(t - t_term <= LEAVE_MAX_S, "graceful leave seen everywhere after %.3fs (target %.1fs)"
              % (t - t_term, LEAVE_MAX_S))
    try:
        leaver.proc.wait(timeout=10.0)
    except Exception:  # noqa: BLE001 - reported below
        pass
    rc = leaver.stop()
    check(rc == 0, "leaving node exit code %s; log tail:\n%s" % (rc, leaver.read_log()[-2000:]))
    WATCH.remove(leaver)
    # A little later it is still "left" (or forgotten), never "dead" or "suspect".
    C.wait_converged(survivors, timeout=10.0)
    wrong = [o for o in WATCH.odd if o[2] == leaver.node_id and o[0] >= t_term and o[3] in ("dead", "suspect")]
    check(not wrong, "a survivor reported the leaver %s after SIGTERM: %r" % (leaver.node_id, wrong[:3]))
    for n in survivors:
        st = n.states().get(leaver.node_id)
        check(st in ("left", None), "%s now says %s is %r" % (n.node_id, leaver.node_id, st))


def test_join_under_load():
    base = [n for n in C.nodes[:3]]
    stop = threading.Event()
    lock = threading.Lock()
    results = collections.Counter()
    errors = []
    sent_after_join = [0]
    joined_at = [None]

    def client(tid):
        conns = [n.conn(timeout=10.0) for n in base]
        i = tid
        try:
            while not stop.is_set():
                k = i % len(base)
                key = LOAD_KEYS[(i * 7) % len(LOAD_KEYS)]
                try:
                    s, h, b = do_request(conns[k], "POST", "/v1/chat/completions",
                                         chat_body("load %d" % i, max_tokens=2), key=key)
                    with lock:
                        results[s] += 1
                        if joined_at[0] is not None:
                            sent_after_join[0] += 1
                        if s not in (200, 429):
                            errors.append((base[k].node_id, key, s, b[:200]))
                except Exception as e:  # noqa: BLE001 - a client error is what this test looks for
                    with lock:
                        errors.append((base[k].node_id, key, "error", repr(e)))
                    conns[k].close()
                    conns[k] = base[k].conn(timeout=10.0)
                i += 3
                stop.wait(0.004)  # ~250 requests/s over 3 clients: load, not a CPU hog
        finally:
            for c in conns:
                c.close()

    served0 = 0
    threads = [threading.Thread(target=client, args=(t,), daemon=True) for t in range(3)]
    for t in threads:
        t.start()
    try:
        # Traffic flows before the join...
        harness.wait_until(lambda: sum(results.values()) >= 200, timeout=20.0, what="200 responses before the join")
        # Seeded with the killed node, the node that left and one live node: any one live
        # seed is enough to join.
        newbie = C.new_node(seeds=[C.nodes[4].peer_addr(), C.nodes[3].peer_addr(), base[1].peer_addr()])
        C.start_nodes([newbie])
        WATCH.add(newbie)
        members = base + [newbie]

        def seen_everywhere():
            return WATCH.all_seen(ids(members), newbie.node_id, "alive")
        try:
            harness.wait_until(seen_everywhere, timeout=15.0, interval=0.02, what="the new node alive everywhere")
            C.wait_converged(members, timeout=10.0)
        except AssertionError as e:
            check(False, "%s\n%s" % (e, C.describe()))
        t = seen_everywhere()
        if t is not None:
            FIGURES["join under load (process start -> all 4 list it alive)"] = "%.3fs" % (t - newbie.launched_at)
            print("  join under load: %.3fs" % (t - newbie.launched_at))
        with lock:
            joined_at[0] = time.monotonic()
        # ...and keeps flowing while the ring hands keys to the new node.
        harness.wait_until(lambda: sent_after_join[0] >= 1000 and time.monotonic() - joined_at[0] >= 3.0,
                           timeout=40.0, what="1000 responses and 3 s after the join")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=15.0)
    owned = [k for k in LOAD_KEYS if newbie.view(k).get("owner") == newbie.node_id]
    served = newbie.metric("llmlimit_peer_checks_served_total") - served0
    unreachable = sum(n.metric("llmlimit_peer_owner_unreachable_total") for n in members)
    failures = sum(n.metric("llmlimit_peer_failures_total") for n in members)
    print("  under load: %s; %d after the join; new node owns %d/%d keys and served %d forwarded checks; "
          "owner-unreachable fallbacks %d, forwarding failures %d"
          % (dict(results), sent_after_join[0], len(owned), len(LOAD_KEYS), served, unreachable, failures))
    FIGURES["join under load: client errors / owner-unreachable fallbacks / forwarding failures"] = \
        "%d / %d / %d" % (len(errors), unreachable, failures)
    check(not errors, "%d client errors while a node joined, e.g. %r" % (len(errors), errors[:5]))
    check(owned, "the new node owns none of the %d load keys" % len(LOAD_KEYS))
    check(served > 0, "the new node served no forwarded check: the non-owners did not route to it")


def test_clean_exit():
    WATCH.stop()
    C.stop_all()
    print("  figures (default gossip timings, 5-node loopback cluster, this build):")
    for k, v in FIGURES.items():
        print("    %s: %s" % (k, v))


if __name__ == "__main__":
    harness.run([test_join_spread, test_healthy_no_false_dead, test_kill9_detection,
                 test_sigterm_leave, test_join_under_load, test_clean_exit])
