"""Helpers for cluster integration tests: several real llmlimitd processes on loopback, joined
by gossip, built on harness.Node.

Every node gets its own HTTP port and peer port (TCP for forwarded checks and UDP for gossip on
the same number). The first node is started alone and is everybody's seed; the others start in
parallel once it answers, which is how an operator brings a cluster up, and the cluster is
ready when every node lists every other one alive. Waits poll a condition against a deadline.
"""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time

import harness
from harness import check


def free_peer_port():
    """A port free for both TCP and UDP on 127.0.0.1 (the peer port serves both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise AssertionError("no port free for both TCP and UDP")


def keygen(path):
    """Writes a fresh cluster key with `llmlimitd keygen` and returns its path."""
    rc, out, err = harness.run_cli(["keygen", path])
    if rc != 0:
        raise AssertionError("llmlimitd keygen %s failed (%s): %s%s" % (path, rc, out, err))
    return path


_METRIC_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text -> list of (name, {label: value}, float)."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _METRIC_RE.match(line)
        if not m:
            continue
        try:
            v = float(m.group(3))
        except ValueError:
            continue
        out.append((m.group(1), dict(_LABEL_RE.findall(m.group(2) or "")), v))
    return out


class ClusterNode(harness.Node):
    """One cluster member. launch() starts the process without waiting, so several nodes can
    start at once; wait_healthy() then waits for /healthz."""

    def __init__(self, node_id, keys, key_file, seeds=(), admission_log=False, extra_args=(),
                 env=None):
        super().__init__(keys, extra_args, env)
        self.node_id = node_id
        self.key_file = key_file
        self.seeds = list(seeds)   # "host:port" strings
        self.peer_port = None
        self.launched_at = None    # time.monotonic() just before the process was created
        self.launches = 0
        self.killed = False
        self.auto_seed = False     # Cluster fills in seeds (node 0) at launch
        self.admission_log = os.path.join(self.dir, "admissions.log") if admission_log else None

    def args(self):
        a = [harness.LLMLIMITD, "--listen", "127.0.0.1:%d" % self.port, "--keys", self.keys_path,
             "--node-id", self.node_id, "--peer-listen", "127.0.0.1:%d" % self.peer_port,
             "--cluster-key-file", self.key_file]
        if self.seeds:
            a += ["--seeds", ",".join(self.seeds)]
        if self.admission_log:
            a += ["--admission-log", self.admission_log]
        return a + self.extra_args

    def launch(self):
        self.port = harness.free_port()
        self.peer_port = free_peer_port()
        self.log = open(self.log_path, "ab")
        self.launches += 1
        self.launched_at = time.monotonic()
        self.proc = subprocess.Popen(self.args(), stdout=self.log, stderr=subprocess.STDOUT,
                                     env=self.env)
        return self

    def wait_healthy(self, timeout=20.0):
        """Waits for /healthz. A process that exited at once (it lost the race for a port) is
        started again on other ports: safe, since no other node knows its ports yet."""
        while True:
            try:
                harness.wait_until(self._healthy, timeout=timeout,
                                   what="%s /healthz" % self.node_id)
                return self
            except AssertionError:
                if self.proc.poll() is None or self.launches >= 5:
                    raise AssertionError("%s did not start (exit %s); log:\n%s"
                                         % (self.node_id, self.proc.returncode,
                                            self.read_log()[-3000:]))
                self.log.close()
                self.launch()

    def start(self, timeout=20.0):
        return self.launch().wait_healthy(timeout)

    def peer_addr(self, host="127.0.0.1"):
        return "%s:%d" % (host, self.peer_port)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def get_json(self, path, timeout=5.0):
        status, _, body = self.request("GET", path, timeout=timeout)
        if status != 200:
            raise AssertionError("%s GET %s: status %s %r" % (self.node_id, path, status, body[:300]))
        return json.loads(body)

    def view(self, key=None, timeout=5.0):
        """GET /cluster (or /cluster?key=K) as parsed JSON."""
        if key is None:
            return self.get_json("/cluster", timeout)
        from urllib.parse import quote
        return self.get_json("/cluster?key=" + quote(key, safe=""), timeout)

    def states(self, timeout=5.0):
        """{member id: state} in this node's view."""
        return {m["id"]: m["state"] for m in self.view(timeout=timeout)["members"]}

    def metrics(self, timeout=5.0):
        status, _, body = self.request("GET", "/metrics", timeout=timeout)
        if status != 200:
            raise AssertionError("%s GET /metrics: status %s" % (self.node_id, status))
        return parse_metrics(body.decode("utf-8", "replace"))

    def metric(self, name, timeout=5.0, **labels):
        """Sum of the series called name whose labels include `labels` (0 when none)."""
        return sum(v for n, lab, v in self.metrics(timeout)
                   if n == name and all(lab.get(k) == str(w) for k, w in labels.items()))

    def kill9(self):
        self.killed = True
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def admission_lines(self):
        """The admission log's lines, split into fields ([] before the first flush)."""
        try:
            with open(self.admission_log) as f:
                return [ln.split() for ln in f.read().splitlines() if ln.strip()]
        except OSError:
            return []


class Cluster:
    """N nodes sharing one generated cluster key; node i is called f"{prefix}{i}" and every node
    is seeded with node 0 (seed_hosts can name node 0 differently for some nodes, e.g.
    {3: "localhost"} to exercise seeds given as host names)."""

    def __init__(self, n, keys, admission_log=False, extra_args=(), prefix="n", seed_hosts=None):
        self.dir = tempfile.mkdtemp(prefix="llmlimit-cluster-")
        self.key_file = keygen(os.path.join(self.dir, "cluster.key"))
        self.keys = keys
        self.admission_log = admission_log
        self.extra_args = list(extra_args)
        self.prefix = prefix
        self.seed_hosts = dict(seed_hosts or {})
        self.nodes = []
        for _ in range(n):
            self.new_node()
        _CLUSTER_DIRS.append(self.dir)

    def new_node(self, seeds=None, extra_args=(), key_file=None):
        """Adds a node (not started). seeds=None: seeded with node 0 once it is running."""
        i = len(self.nodes)
        node = harness.tracked(ClusterNode("%s%d" % (self.prefix, i), self.keys,
                                           key_file or self.key_file,
                                           seeds if seeds is not None else (),
                                           self.admission_log,
                                           self.extra_args + list(extra_args)))
        node.auto_seed = seeds is None
        self.nodes.append(node)
        return node

    def _seed(self, node):
        if node.auto_seed and node is not self.nodes[0]:
            host = self.seed_hosts.get(self.nodes.index(node), "127.0.0.1")
            node.seeds = [self.nodes[0].peer_addr(host)]

    def start(self, converge_timeout=20.0):
        """Starts node 0, then every other node at once; waits until all see all alive and
        none is warming up any more."""
        self.nodes[0].start()
        self.start_nodes(self.nodes[1:])
        self.wait_converged(timeout=converge_timeout, settled=True)
        return self

    def start_nodes(self, nodes):
        """Launches nodes in parallel, then waits for each to answer /healthz."""
        for node in nodes:
            self._seed(node)
            node.launch()
        for node in nodes:
            node.wait_healthy()

    def running(self):
        return [n for n in self.nodes if n.running()]

    def node(self, node_id):
        for n in self.nodes:
            if n.node_id == node_id:
                return n
        raise KeyError(node_id)

    def converged(self, nodes=None, settled=False):
        """True when every node in nodes has joined and lists exactly those nodes alive; with
        settled, also when none is in its warm-up (after a join a node sends checks on its own
        keys to the next node of their ring order for a few seconds: src/peer/admit.h)."""
        nodes = nodes if nodes is not None else self.running()
        want = {n.node_id for n in nodes}
        for n in nodes:
            try:
                v = n.view(timeout=2.0)
            except (OSError, ValueError, AssertionError):
                return False
            alive = {m["id"] for m in v["members"] if m["state"] == "alive"}
            if not v.get("joined") or alive != want or (settled and v.get("warming")):
                return False
        return True

    def wait_converged(self, nodes=None, timeout=20.0, settled=False):
        try:
            harness.wait_until(lambda: self.converged(nodes, settled), timeout=timeout, interval=0.05,
                               what="every node to list the %d nodes alive" % len(nodes or self.running()))
        except AssertionError:
            raise AssertionError("cluster did not converge; views:\n%s" % self.describe())

    def describe(self):
        lines = []
        for n in self.nodes:
            if not n.running():
                lines.append("  %s: not running (exit %s)" % (n.node_id, n.proc and n.proc.returncode))
                continue
            try:
                v = n.view(timeout=2.0)
                lines.append("  %s: joined=%s %s" % (n.node_id, v.get("joined"),
                                                       {m["id"]: m["state"] for m in v["members"]}))
            except Exception as e:  # noqa: BLE001 - diagnostics only
                lines.append("  %s: /cluster failed: %r" % (n.node_id, e))
        return "\n".join(lines)

    def owner(self, key, via=None):
        return (via or self.running()[0]).view(key)["owner"]

    def stop_all(self, expect_clean=True):
        """SIGTERM to every running node at once (each leaves gracefully), then waits. Checks
        exit code 0 and no sanitizer report for each node that was not killed on purpose."""
        live = [n for n in self.nodes if n.running()]
        for n in live:
            n.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30.0
        for n in live:
            try:
                n.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                check(False, "%s did not exit within 30 s of SIGTERM" % n.node_id)
        for n in self.nodes:
            if n.proc is None or n.log.closed:
                continue
            rc = n.stop()  # the process has exited (or is killed here): closes the log, scans it
            if expect_clean and not n.killed and n in live:
                check(rc == 0, "%s exit code %s after SIGTERM; log tail:\n%s"
                      % (n.node_id, rc, n.read_log()[-3000:]))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop_all(expect_clean=exc[0] is None)


_CLUSTER_DIRS = []


def _cleanup_dirs():
    """Removes the clusters' key directories at exit when no check failed (as harness does for
    the nodes' directories); registered after harness's own exit handler, so it runs first."""
    import shutil
    if not harness.FAILURES and not os.environ.get("LLMLIMIT_KEEP_DIRS"):
        for d in _CLUSTER_DIRS:
            shutil.rmtree(d, ignore_errors=True)


import atexit as _atexit  # noqa: E402
_atexit.register(_cleanup_dirs)


class ViewWatch:
    """Polls GET /cluster on a set of nodes from a background thread (one keep-alive connection
    per node) and records what each observer says about each member and when:
    first[(observer, member, state)] = time.monotonic() of the first response showing it, and
    every observation whose state is not "alive" in `odd`."""

    def __init__(self, nodes, interval=0.02):
        self.nodes = list(nodes)
        self.interval = interval
        self.first = {}
        self.odd = []            # (t, observer, member, state, incarnation)
        self.errors = {}         # observer -> count of failed polls
        self.rounds = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None

    def add(self, node):
        with self._lock:
            self.nodes.append(node)

    def remove(self, node):
        with self._lock:
            if node in self.nodes:
                self.nodes.remove(node)

    def start(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10.0)

    def _run(self):
        conns = {}
        while not self._stop.is_set():
            with self._lock:
                nodes = list(self.nodes)
            for n in nodes:
                if not n.running():
                    continue
                c = conns.get(n)
                if c is None or c[0] != n.port:
                    c = conns[n] = (n.port, n.conn(timeout=2.0))
                try:
                    status, _, body = harness.do_request(c[1], "GET", "/cluster")
                    t = time.monotonic()
                    v = json.loads(body) if status == 200 else None
                except (OSError, ValueError, http.client.HTTPException):
                    c[1].close()
                    conns.pop(n, None)
                    with self._lock:
                        self.errors[n.node_id] = self.errors.get(n.node_id, 0) + 1
                    continue
                if v is None:
                    continue
                with self._lock:
                    for m in v.get("members", []):
                        k = (n.node_id, m["id"], m["state"])
                        if k not in self.first:
                            self.first[k] = t
                        if m["state"] != "alive":
                            self.odd.append((t, n.node_id, m["id"], m["state"], m.get("incarnation")))
            with self._lock:
                self.rounds += 1
            self._stop.wait(self.interval)
        for c in conns.values():
            c[1].close()

    def seen(self, observer, member, state):
        with self._lock:
            return self.first.get((observer, member, state))

    def all_seen(self, observers, member, state, after=None):
        """Latest time at which each observer first showed member in state (after `after`), or
        None while some observer has not shown it yet."""
        ts = []
        with self._lock:
            for o in observers:
                t = self.first.get((o, member, state))
                if t is None or (after is not None and t < after):
                    # first[] keeps the first sighting only; a state seen before `after`
                    # (e.g. an old "dead") is looked up again among later odd observations.
                    later = [x[0] for x in self.odd if x[1] == o and x[2] == member
                             and x[3] == state and (after is None or x[0] >= after)]
                    if state == "alive" or not later:
                        return None
                    t = min(later)
                ts.append(t)
        return max(ts) if ts else None
