"""The key-value ring over the workers, as the demo DAGs use it: put/get of JSON values.

Two backends, chosen by the cluster (`heirflow_kv_backend`, written by the roles to
/etc/heirflow/kv.json on every worker):
- redis: Redis Cluster (roles/redis-cluster). A put returns only once the write reached a
  replica (WAIT), so a key whose task succeeded survives the loss of its master's host.
- riak: Riak KV's HTTP API (roles/riak), with w and dw quorums.
Writes are idempotent (a key is only ever set to the value its task computes), so a retried
task overwrites its own keys with the same value. Transient failures (a node failing over)
are retried for up to KV_RETRY_SECONDS before the task fails and Airflow retries it.
"""
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request

CONFIG = os.environ.get("HEIRFLOW_KV_CONFIG", "/etc/heirflow/kv.json")
KV_RETRY_SECONDS = 60


def load_config(path=CONFIG):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise RuntimeError(f"{path} is missing: deploy playbooks/kv.yml (heirflow_kv_backend)") from None


class KVNotReplicated(Exception):
    pass


class RedisRing:
    def __init__(self, cfg):
        self.cfg = cfg
        self.client = None

    def _connect(self):
        from redis.cluster import ClusterNode, RedisCluster

        self.client = RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in self.cfg["nodes"]],
            password=self.cfg["password"],
            decode_responses=True,
            socket_timeout=3,
            socket_connect_timeout=3,
        )
        return self.client

    def _retrying(self, op):
        from redis.exceptions import RedisError

        deadline = time.monotonic() + KV_RETRY_SECONDS
        while True:
            try:
                return op(self.client or self._connect())
            except (RedisError, KVNotReplicated, OSError) as e:
                # a master failing over: the slot map changes under us; start over with a new
                # client (it rereads the map) until the deadline
                if time.monotonic() > deadline:
                    raise
                print(f"kv: {type(e).__name__}: {e}; retrying")
                self.client = None
                time.sleep(1)

    def put(self, key, value):
        data = json.dumps(value, sort_keys=True)
        want = int(self.cfg.get("min_replicas", 1))

        def op(c):
            c.set(key, data)
            acked = c.execute_command("WAIT", want, int(self.cfg.get("wait_ms", 2000)), target_nodes=c.get_node_from_key(key))
            if isinstance(acked, dict):  # some client versions answer per node
                acked = min(acked.values())
            if int(acked) < want:
                raise KVNotReplicated(f"{key}: reached {acked} of {want} replicas")

        self._retrying(op)

    def get(self, key):
        data = self._retrying(lambda c: c.get(key))
        return None if data is None else json.loads(data)


class RiakRing:
    def __init__(self, cfg):
        self.cfg = cfg
        self.next = 0

    def _request(self, method, key, body=None, query=""):
        deadline = time.monotonic() + KV_RETRY_SECONDS
        nodes = self.cfg["nodes"]
        while True:
            host, port = nodes[self.next % len(nodes)]
            url = f"http://{host}:{port}/types/default/buckets/{self.cfg.get('bucket', 'heirflow')}/keys/{urllib.parse.quote(key, safe='')}{query}"
            req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return r.read()
            except urllib.error.HTTPError as e:
                if e.code == 404:
                    return None
                err = e
            except OSError as e:
                err = e
            if time.monotonic() > deadline:
                raise err
            print(f"kv: riak {host}:{port}: {err}; trying the next node")
            self.next += 1
            time.sleep(1)

    def put(self, key, value):
        w = self.cfg.get("w", 2)
        self._request("PUT", key, json.dumps(value, sort_keys=True).encode(), f"?w={w}&dw={w}")

    def get(self, key):
        data = self._request("GET", key, query=f"?r={self.cfg.get('w', 2)}")
        return None if data is None else json.loads(data)


def ring(cfg=None):
    cfg = cfg or load_config()
    backends = {"redis": RedisRing, "riak": RiakRing}
    if cfg.get("backend") not in backends:
        raise RuntimeError(f"{CONFIG}: backend {cfg.get('backend')!r} is not one of {sorted(backends)}")
    return backends[cfg["backend"]](cfg)
