"""Shared pieces of the chaos suite: a 5-node cluster whose nodes keep their ports across
restarts (on loopback, or each in its own network namespace), llmlimit-bench as the load, and
the measurements (over-admission from the merged admission logs, detection and convergence
from GET /cluster, client errors from the bench's JSON).

Built on tests/integration/cluster.py and harness.py. Only the standard library is used.
"""
import bisect
import collections
import ctypes
import json
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import harness  # noqa: E402
import cluster  # noqa: E402
from harness import check  # noqa: E402

WINDOW_MS = 60000
NOT_ALIVE = ("suspect", "dead", "left")


class ChaosNode(cluster.ClusterNode):
    """A cluster node that keeps its HTTP and peer ports (and node id) when relaunched, so the
    bench's URLs stay valid, and that may live in a network namespace at address `host`."""

    def __init__(self, *a, host="127.0.0.1", netns=None, ports=None, **kw):
        super().__init__(*a, **kw)
        self.host = host
        self.netns = netns
        self.fixed = ports  # (http, peer) or None: picked at the first launch, then kept

    def args(self):
        a = super().args()
        a = [x.replace("127.0.0.1:", self.host + ":") if isinstance(x, str) else x for x in a]
        return (["ip", "netns", "exec", self.netns] if self.netns else []) + a

    def launch(self):
        if self.fixed is None:
            self.fixed = (harness.free_port(), cluster.free_peer_port())
        self.port, self.peer_port = self.fixed
        if getattr(self, "log", None) is not None and not self.log.closed:
            self.log.close()
        self.log = open(self.log_path, "ab")
        self.launches += 1
        self.launched_at = time.monotonic()
        self.killed = False
        self.proc = subprocess.Popen(self.args(), stdout=self.log, stderr=subprocess.STDOUT,
                                     env=self.env)
        return self

    def wait_healthy(self, timeout=20.0):
        harness.wait_until(self._healthy, timeout=timeout, what="%s /healthz" % self.node_id)
        return self

    def conn(self, timeout=10.0):
        import http.client
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def peer_addr(self, host=None):
        return "%s:%d" % (host or self.host, self.peer_port)

    def url(self):
        return "http://%s:%d" % (self.host, self.port)


class ChaosCluster(cluster.Cluster):
    """cluster.Cluster with ChaosNodes. hosts[i]/netns[i]: where node i lives (default: all on
    127.0.0.1 with free ports; in namespaces every node can use the same fixed ports)."""

    def __init__(self, n, keys, extra_args=(), hosts=None, netns=None, ports=None):
        self._hosts, self._netns, self._ports = hosts, netns, ports
        super().__init__(n, keys, admission_log=True, extra_args=extra_args, prefix="n")

    def new_node(self, seeds=None, extra_args=(), key_file=None):
        i = len(self.nodes)
        node = harness.tracked(ChaosNode(
            "n%d" % i, self.keys, self.key_file, (), self.admission_log,
            self.extra_args + list(extra_args),
            host=self._hosts[i] if self._hosts else "127.0.0.1",
            netns=self._netns[i] if self._netns else None,
            ports=self._ports))
        node.auto_seed = True
        self.nodes.append(node)
        return node

    def _seed(self, node):
        if node is not self.nodes[0]:
            node.seeds = [self.nodes[0].peer_addr()]

    def relaunch(self, node):
        """Restarts a stopped node with the same id and ports, seeded with every other node (as
        an operator lists all peers, or a headless Service does): seeded with node 0 alone, node
        0 itself would restart with no seed at all."""
        node.seeds = [n.peer_addr() for n in self.nodes if n is not node]
        return node.launch().wait_healthy()

    def agree(self, nodes, keys):
        """True when every node in nodes has joined, lists exactly `nodes` alive, and all name
        the same owner for each key."""
        if not self.converged(nodes):
            return False
        try:
            for k in keys:
                if len({n.view(k, timeout=2.0)["owner"] for n in nodes}) != 1:
                    return False
        except (OSError, ValueError, AssertionError):
            return False
        return True

    def wait_agree(self, nodes, keys, since, timeout=30.0):
        """Seconds from `since` until agree(); None when it did not happen within timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.agree(nodes, keys):
                return time.monotonic() - since
            time.sleep(0.05)
        return None


def detection(watch, survivors, victim, since, timeout=20.0):
    """Seconds from `since` until every survivor's /cluster showed victim suspect/dead/left (as
    recorded by a cluster.ViewWatch); None when not within timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ts = []
        with watch._lock:
            for s in survivors:
                seen = [x[0] for x in watch.odd if x[1] == s and x[2] == victim
                        and x[3] in NOT_ALIVE and x[0] >= since]
                if not seen:
                    break
                ts.append(min(seen))
            else:
                return max(ts) - since
        time.sleep(0.05)
    return None


class Bench:
    """llmlimit-bench in the background: open loop over every node and key until stopped."""

    def __init__(self, urls, keys, rate, workdir, concurrent=20, timeout_ms=2000, max_s=150):
        self.json_path = os.path.join(workdir, "bench.json")
        self.out_path = os.path.join(workdir, "bench.out")
        self.args = [harness.BENCH, "--nodes"] + list(urls) + ["--api-keys"] + list(keys) + [
            "--rate", str(rate), "--concurrent", str(concurrent), "--duration", str(max_s),
            "--timeout-ms", str(timeout_ms), "--retries", "3", "--json", self.json_path,
            "--key-report-max", "1000", "--quiet"]
        self.proc = None

    def start(self):
        self.out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(self.args, stdout=self.out, stderr=subprocess.STDOUT)
        self.t0 = time.monotonic()
        return self

    def stop(self):
        """SIGINT (stop sending, finish what is in flight), then the parsed JSON report."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            check(False, "llmlimit-bench did not stop within 30 s of SIGINT")
        self.out.close()
        try:
            with open(self.json_path) as f:
                return json.load(f)
        except (OSError, ValueError) as e:
            check(False, "llmlimit-bench wrote no JSON (%r); output:\n%s" % (e, open(self.out_path).read()[-2000:]))
            return None


def client_errors(report, urls, victims):
    """Checks the bench report: no request finally failed, every status is 200 or 429, and
    connection errors and retries happened only on the victims' connections. Returns
    (connection errors on victims, retried on victims, summary text)."""
    if report is None:
        return 0, 0, "no report"
    vurls = {v.url() for v in victims}
    errs = retried = 0
    for n in report["nodes"]:
        if n["url"] in vurls:
            errs += n["connection_errors"]
            retried += n["retried"]
            check(n["transport_errors"] == 0 and n["http_errors"] == 0,
                  "victim %s: %d requests failed for good (transport %d, http %d); kinds %r"
                  % (n["url"], n["transport_errors"] + n["http_errors"], n["transport_errors"],
                     n["http_errors"], n["connection_errors_by_kind"]))
        else:
            check(n["connection_errors"] == 0 and n["retried"] == 0 and n["transport_errors"] == 0
                  and n["http_errors"] == 0,
                  "node %s (not a victim): connection errors %d, retried %d, transport errors %d, "
                  "http errors %d; kinds %r" % (n["url"], n["connection_errors"], n["retried"],
                                                 n["transport_errors"], n["http_errors"],
                                                 n["connection_errors_by_kind"]))
    bad = {s: c for s, c in report["status_counts"].items() if s not in ("200", "429")}
    check(not bad, "statuses other than 200/429: %r" % bad)
    check(report["transport_errors"]["total"] == 0,
          "%d requests failed without a response: %r" % (report["transport_errors"]["total"],
                                                         report["transport_errors"]))
    check(report["dropped"] == 0, "%d requests dropped (waited > --timeout-ms for a connection)"
          % report["dropped"])
    text = "%d/%d" % (errs, retried)
    return errs, retried, text


def admissions(nodes):
    """{key: sorted admission times (ms)} from the A lines of every node's admission log."""
    out = collections.defaultdict(list)
    for n in nodes:
        for f in n.admission_lines():
            if f[0] == "A" and len(f) == 7:
                out[f[2]].extend([int(f[1])] * int(f[3]))
    for v in out.values():
        v.sort()
    return out


def now_ms():
    return int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1000)


def over_admission(adm, limits, report, kills_ms, flush_ms=300):
    """Worst over-admission per key, in % of its limit, over every 60 s window (t-60 s, t]
    ending at an admission. Admissions a node answered but had not flushed to its log when it
    was killed (-9) are the bench's 200s minus the logged A lines; they are counted, at worst,
    in every window that overlaps [kill - flush_ms, kill] of any kill. Returns
    ({key: (max in a window, limit, %)}, {key: unlogged})."""
    ok = {k["key"]: k["successful"] for k in report["keys"]} if report else {}
    res, lost = {}, {}
    for key, limit in limits.items():
        ts = adm.get(key, [])
        missing = ok.get(key, len(ts)) - len(ts)
        check(missing >= 0, "%s: %d A lines but the bench saw %d 200s" % (key, len(ts), ok.get(key)))
        lost[key] = max(0, missing)
        worst = 0
        for i, t in enumerate(ts):
            c = i + 1 - bisect.bisect_right(ts, t - WINDOW_MS)
            if lost[key] and any(t - WINDOW_MS < k and t >= k - flush_ms for k in kills_ms):
                c += lost[key]
            worst = max(worst, c)
        if lost[key] and not ts:
            worst = lost[key]
        res[key] = (worst, limit, 100.0 * max(0, worst - limit) / limit)
    return res, lost


# --- network namespaces -----------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def setns(path):
    """Moves the calling thread (and the threads and processes it starts afterwards) into the
    network namespace at path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, "setns %s: %s" % (path, os.strerror(e)))
    finally:
        os.close(fd)


def sh(*args):
    r = subprocess.run(list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise OSError("%s: exit %d: %s" % (" ".join(args), r.returncode, r.stdout.decode()[-500:]))


class Netns:
    """n node namespaces plus a hub namespace holding a bridge; node i is 10.199.0.(i+1) on its
    eth0, the hub 10.199.0.254 (the bench and the test's HTTP polls run in the hub). Nothing is
    configured in the root namespace. delete() removes every namespace (their veths go too)."""

    SUBNET = "10.199.0."

    def __init__(self, n):
        self.prefix = "llmlimit-chaos-%d-" % os.getpid()
        self.hub = self.prefix + "hub"
        self.nodes = [self.prefix + str(i) for i in range(n)]
        self.hosts = [self.SUBNET + str(i + 1) for i in range(n)]
        self.made = []
        self.root_fd = None

    @staticmethod
    def available():
        """None when this process may create namespaces, else the reason it may not."""
        probe = "llmlimit-chaos-%d-probe" % os.getpid()
        try:
            sh("ip", "netns", "add", probe)
        except (OSError, FileNotFoundError) as e:
            return str(e)
        try:
            sh("ip", "netns", "del", probe)
        except OSError:
            pass
        return None

    def create(self):
        sh("ip", "netns", "add", self.hub)
        self.made.append(self.hub)
        sh("ip", "-n", self.hub, "link", "set", "lo", "up")
        sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.hub, "addr", "add", self.SUBNET + "254/24", "dev", "br0")
        sh("ip", "-n", self.hub, "link", "set", "br0", "up")
        for i, ns in enumerate(self.nodes):
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", self.hub, "link", "add", self.veth(i), "type", "veth", "peer", "name",
               "eth0", "netns", ns)
            sh("ip", "-n", self.hub, "link", "set", self.veth(i), "master", "br0")
            sh("ip", "-n", self.hub, "link", "set", self.veth(i), "up")
            sh("ip", "-n", ns, "addr", "add", self.hosts[i] + "/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        return self

    @staticmethod
    def veth(i):
        return "vh%d" % i

    def enter_hub(self):
        self.root_fd = os.open("/proc/self/ns/net", os.O_RDONLY)
        setns("/run/netns/" + self.hub)

    def leave_hub(self):
        if self.root_fd is not None:
            if _libc.setns(self.root_fd, CLONE_NEWNET) != 0:
                print("chaos: could not return to the root network namespace", file=sys.stderr)
            os.close(self.root_fd)
            self.root_fd = None

    def cut(self, i):
        sh("ip", "-n", self.hub, "link", "set", self.veth(i), "down")

    def heal(self, i):
        sh("ip", "-n", self.hub, "link", "set", self.veth(i), "up")

    def delete(self):
        self.leave_hub()
        for ns in reversed(self.made):
            try:
                sh("ip", "netns", "del", ns)
            except OSError as e:
                print("chaos: cleanup: %s" % e, file=sys.stderr)
        self.made = []
