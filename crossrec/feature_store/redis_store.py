"""`RedisFeatureStore`: the feature store on Redis (a server, or a Redis Cluster).

Keys, all under ``feature_store.key_prefix`` (``P``); ``{…}`` is the Redis Cluster hash tag, so a
user's keys share one slot and one Lua script can update them atomically:

=============================  ==========================================================
``P:u:{U}:h:<domain>``          ZSET, the capped history (member: JSON entry, score: time)
``P:u:{U}:seen``                ZSET, event ids written for U (score: arrival; TTL-trimmed)
``P:u:{U}:seq``                 INT, how many events of U were written
``P:u:{U}:ctx``                 ZSET, U's newest events across domains (sample contexts)
``P:u:{U}:v:<domain>``          HASH, user vector (float32), model version, time, seq
``P:pop:{D}:z`` / ``:t0``       ZSET of decayed popularity and its reference time
``P:pop:{D}:seen:<bucket>``     SET, event ids counted in D's popularity in one time bucket
``P:{dirty}``                   ZSET, users waiting for a vector refresh (score: last mark)
``P:{model}:current``           JSON pointer to the current model version
``P:{model}:history``           LIST, every pointer change, newest first (rollback)
``P:{alive}:<name>``            STRING, a process part's heartbeat (JSON state, expires)
``P:items:{D}:text``            HASH, texts of items the model has not seen
``P:items:{D}:pending``         SET, items seen in events whose text is not known yet
``P:items:{D}:new``             STREAM, encoded new items for serving indexes
=============================  ==========================================================

A batch is written as one pipeline of Lua scripts: one for the batch's users (dedupe, history,
cap, counter; one per hash slot on a cluster) and one per domain (dedupe, decayed popularity).
Each script is atomic and idempotent on its own, so a pipeline cut short by a failure is simply
written again.

Example:
    >>> store = RedisFeatureStore.from_config(cfg.feature_store)
    >>> store.write_events(events).written
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from crossrec.config import FeatureStoreConfig, redact_url

if TYPE_CHECKING:
    from crossrec.config import OnlineConfig
    from crossrec.feature_store.samples import RedisSampleBuffer
from crossrec.data.events import Event
from crossrec.errors import FeatureStoreError
from crossrec.feature_store.base import (
    FeatureStore,
    HistoryEntry,
    ModelPointer,
    NewItem,
    SampleSpec,
    UserState,
    UserVector,
    WriteResult,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

# The popularity dedupe window is cut into this many time buckets (one SET of event ids each,
# expiring on its own): memory stays at about one window of event ids per domain.
POPULARITY_BUCKETS = 4

# Many users in one call (all of a batch on one server; one hash slot's users on a cluster).
# KEYS: [the sample stream when ARGV[7] == 'xadd'], then per user: seen, seq, [context when
# ARGV[5] > 0], then one history key per domain of the user.
# ARGV: now, ttl, cap, one JSON payload (one argument: cheap to send): per user, per domain, the
# events as [event_id, ts, member, context piece, sample prefix, arrival index]; context length
# (0: no samples), the sample stream's cap, where samples go ('xadd' here, 'return' to the
# caller on a cluster, where the stream lives in another slot), and how many event ids a user's
# dedupe set keeps at most.
#
# Samples: a new event (never one already seen) becomes one next-item sample whose context is the
# user's newest events before it, across domains. The context ZSET keeps them (score: event
# time; member: "<event id>\n<JSON [domain, item]>", so ties sort by event id and the JSON is
# copied into the sample as it is, never decoded).
_WRITE_USERS = """
local now = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local users = cjson.decode(ARGV[4])
local n = tonumber(ARGV[5])
local mode = ARGV[7]
local seen_cap = tonumber(ARGV[8])
local k = 1
local stream
if mode == 'xadd' then
  stream = KEYS[1]
  k = 2
end
local total = 0
local samples = {}
local recorded = 0
for _, groups in ipairs(users) do
  local seen = KEYS[k]
  local seq = KEYS[k + 1]
  k = k + 2
  local ctx
  if n > 0 then
    ctx = KEYS[k]
    k = k + 1
  end
  redis.call('ZREMRANGEBYSCORE', seen, '-inf', now - ttl)
  local new = 0
  local pending = {}
  for _, events in ipairs(groups) do
    local hist = KEYS[k]
    k = k + 1
    local added = 0
    for _, ev in ipairs(events) do
      if redis.call('ZADD', seen, 'NX', now, ev[1]) == 1 then
        redis.call('ZADD', hist, ev[2], ev[3])
        added = added + 1
        if n > 0 then
          redis.call('ZADD', ctx, ev[2], ev[1] .. '\\n' .. ev[4])
          if ev[5] ~= '' then pending[#pending + 1] = ev end
        end
      end
    end
    if added > 0 then redis.call('ZREMRANGEBYRANK', hist, 0, -(cap + 1)) end
    new = new + added
  end
  -- Contexts once the whole batch is in: an event's context is every event of the user
  -- before it in (time, event id) order, whatever order they arrived in.
  for _, ev in ipairs(pending) do
    local ts = tonumber(ev[2])
    local rows = redis.call('ZREVRANGEBYSCORE', ctx, ev[2], '-inf', 'WITHSCORES', 'LIMIT', 0,
                            n + 8)
    local pieces = {}
    for j = 1, #rows, 2 do
      if #pieces >= n then break end
      local m = rows[j]
      local p = string.find(m, '\\n', 1, true)
      if tonumber(rows[j + 1]) < ts or string.sub(m, 1, p - 1) < ev[1] then
        pieces[#pieces + 1] = string.sub(m, p + 1)
      end
    end
    local ordered = {}
    for j = #pieces, 1, -1 do ordered[#ordered + 1] = pieces[j] end
    samples[#samples + 1] = {tonumber(ev[6]), ev[5] .. table.concat(ordered, ',') .. ']}'}
    recorded = recorded + 1
  end
  if new > 0 then
    local count = redis.call('INCRBY', seq, new)
    if n > 0 then redis.call('ZREMRANGEBYRANK', ctx, 0, -(n + 1)) end
    -- A flood for one user keeps only the newest ids (by arrival): memory per user is bounded.
    -- Only users with more events than the cap ever pay for the trim.
    if count > seen_cap then redis.call('ZREMRANGEBYRANK', seen, 0, -(seen_cap + 1)) end
  end
  redis.call('EXPIRE', seen, ttl)
  total = total + new
end
-- Samples go in the batch's arrival order (the buffer's order: the newest are the holdout).
table.sort(samples, function(a, b) return a[1] < b[1] end)
if stream then
  for _, s in ipairs(samples) do
    redis.call('XADD', stream, 'MAXLEN', '~', ARGV[6], '*', 's', s[2])
  end
  samples = {}
end
return {total, recorded, samples}
"""

# KEYS: the sample stream; ARGV: its cap, then the samples (a cluster's second step).
_APPEND_SAMPLES = """
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 's', ARGV[i])
end
return #ARGV - 1
"""

# KEYS: scores, t0, then the dedupe buckets (sets of event ids): the current one first, then
# the older ones of the window. ARGV: now, the current bucket's TTL, half_life, JSON
# [[event_id, item, ts, weight], ...]. An event counts once unless its first copy is older
# than the window (the buckets expire). Scores are kept relative to the reference time t0
# (weight * 2^((ts - t0) / half_life)) so an event never needs updating as time passes; reads
# scale by 2^((t0 - now) / half_life). When the exponent grows large, everything is rescaled to
# a new reference.
_WRITE_POPULARITY = """
local now = tonumber(ARGV[1])
local hl = tonumber(ARGV[3])
local t0 = tonumber(redis.call('GET', KEYS[2]))
if not t0 then
  t0 = now
  redis.call('SET', KEYS[2], ARGV[1])
end
local new = 0
for _, ev in ipairs(cjson.decode(ARGV[4])) do
  local fresh = true
  for b = 4, #KEYS do
    if redis.call('SISMEMBER', KEYS[b], ev[1]) == 1 then
      fresh = false
      break
    end
  end
  if fresh and redis.call('SADD', KEYS[3], ev[1]) == 1 then
    local ts = tonumber(ev[3])
    local e = (ts - t0) / hl
    if e > 256 then
      local rows = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
      local f = 2 ^ (-e)
      for j = 1, #rows, 2 do
        redis.call('ZADD', KEYS[1], tonumber(rows[j + 1]) * f, rows[j])
      end
      t0 = ts
      redis.call('SET', KEYS[2], ev[3])
      e = 0
    end
    redis.call('ZINCRBY', KEYS[1], tonumber(ev[4]) * 2 ^ e, ev[2])
    new = new + 1
  end
end
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[2]))
return new
"""

# KEYS: vector hash; ARGV: seq, vector, model_version, updated_at
_WRITE_VECTOR = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'seq'))
if cur and cur > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'vector', ARGV[2], 'model_version', ARGV[3],
           'updated_at', ARGV[4])
return 1
"""

# KEYS: dirty; ARGV: (user, claimed mark)*
_CLEAR_DIRTY = """
local n = 0
for i = 1, #ARGV, 2 do
  local cur = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if cur and tonumber(cur) <= tonumber(ARGV[i + 1]) then
    redis.call('ZREM', KEYS[1], ARGV[i])
    n = n + 1
  end
end
return n
"""


def _member(e: Event) -> str:
    """A history entry as stored (its score is the event time)."""
    return json.dumps(
        {"e": e.eid, "i": e.iid, "t": e.event_type, "v": e.value}, separators=(",", ":")
    )


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _sha(source: str) -> str:
    import hashlib

    return hashlib.sha1(source.encode("utf-8"), usedforsecurity=False).hexdigest()


# One command for `RedisFeatureStore._pipelined`: the key it routes by, and what it adds to a
# pipeline.
Op = tuple[str, Callable[[Any], Any]]


class RedisFeatureStore(FeatureStore):
    """The feature store on Redis.

    Args:
        client: a ``redis.Redis`` or ``redis.cluster.RedisCluster`` (``decode_responses=False``).
        cfg: key prefix, history length, TTLs, popularity settings.
    """

    def __init__(self, client: Any, cfg: FeatureStoreConfig) -> None:
        self.client = client
        self.cfg = cfg
        self.prefix = cfg.key_prefix
        self._scripts = {
            name: (src, _sha(src))
            for name, src in (
                ("write_users", _WRITE_USERS),
                ("write_popularity", _WRITE_POPULARITY),
                ("append_samples", _APPEND_SAMPLES),
                ("write_vector", _WRITE_VECTOR),
                ("clear_dirty", _CLEAR_DIRTY),
            )
        }

    def sample_buffer(self, cfg: OnlineConfig) -> RedisSampleBuffer:
        from crossrec.feature_store.samples import RedisSampleBuffer

        return RedisSampleBuffer(self, cfg)

    @classmethod
    def from_config(cls, cfg: FeatureStoreConfig, url: str | None = None) -> RedisFeatureStore:
        """Connects to ``url`` (default ``cfg.url``) with pooling, timeouts, retries with
        exponential backoff and jitter, TLS and password settings from ``cfg``. The password may
        also come from ``CROSSREC_REDIS_PASSWORD``."""
        url = url or cfg.url
        if not url:
            raise FeatureStoreError(
                "feature_store.url is not set (crossrec.embedded starts a local redis-server)"
            )
        if cfg.tls and url.startswith("redis://"):
            url = "rediss://" + url.removeprefix("redis://")
        kwargs: dict[str, Any] = {
            "socket_timeout": cfg.socket_timeout_s,
            "socket_connect_timeout": cfg.connect_timeout_s,
            "retry": Retry(ExponentialWithJitterBackoff(cap=2.0, base=0.05), cfg.retries),
            "retry_on_error": [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
            "health_check_interval": 30,
            "max_connections": cfg.max_connections,
            "decode_responses": False,
        }
        password = cfg.password or os.environ.get("CROSSREC_REDIS_PASSWORD")
        if password:
            kwargs["password"] = password
        if url.startswith("rediss://"):
            for key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
                if getattr(cfg, key):
                    kwargs[key] = getattr(cfg, key)
        try:
            if cfg.cluster:
                from redis.cluster import RedisCluster

                client: Any = RedisCluster.from_url(url, **kwargs)
            else:
                client = redis.Redis.from_url(url, **kwargs)
        except (ValueError, redis.exceptions.RedisError) as exc:
            raise FeatureStoreError(f"feature_store.url {redact_url(url)!r}: {exc}") from exc
        return cls(client, cfg)

    # ------------------------------------------------------------------ keys
    def user_key(self, user_id: str, part: str) -> str:
        return f"{self.prefix}:u:{{{user_id}}}:{part}"

    def pop_key(self, domain: str, part: str) -> str:
        return f"{self.prefix}:pop:{{{domain}}}:{part}"

    def items_key(self, domain: str, part: str) -> str:
        return f"{self.prefix}:items:{{{domain}}}:{part}"

    @property
    def dirty_key(self) -> str:
        return f"{self.prefix}:{{dirty}}"

    @property
    def model_key(self) -> str:
        return f"{self.prefix}:{{model}}:current"

    @property
    def model_history_key(self) -> str:
        return f"{self.prefix}:{{model}}:history"

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except redis.exceptions.RedisError as exc:
            raise FeatureStoreError(f"redis {what} failed: {type(exc).__name__}: {exc}") from exc

    def _script(self, name: str, keys: list[str], args: list[Any]) -> Op:
        """A script call as a pipeline command (by SHA; `_pipelined` loads scripts a server
        does not know yet)."""
        sha = self._scripts[name][1]
        return keys[0], lambda pipe: pipe.evalsha(sha, len(keys), *keys, *args)

    def _pipelined(self, ops: Sequence[Op]) -> list[Any]:
        """Runs ``ops`` in one pipeline per server and returns their replies in order: one
        round trip on a single server, one per primary a batch touches on a cluster (redis-py's
        cluster pipeline refuses scripts, so each primary gets a plain pipeline of its own).

        A server that answers NOSCRIPT (a fresh one, a restart, a failover) gets every script
        loaded and the whole pipeline runs again: the writes are idempotent."""
        for attempt in range(2):
            try:
                return self._execute(ops)
            except redis.exceptions.NoScriptError:
                if attempt:
                    raise
                self.load_scripts()
            except (redis.exceptions.ConnectionError, redis.exceptions.ResponseError) as exc:
                if self.cfg.cluster and (
                    isinstance(exc, redis.exceptions.ConnectionError)
                    or str(exc).startswith(("MOVED", "ASK", "CLUSTERDOWN"))
                ):
                    # Slots moved or a primary failed over: learn the new layout; the caller
                    # retries the (idempotent) batch.
                    self.client.nodes_manager.initialize()
                raise
        raise AssertionError("unreachable")

    def _execute(self, ops: Sequence[Op]) -> list[Any]:
        if not self.cfg.cluster:
            pipe = self.client.pipeline(transaction=False)
            for _, add in ops:
                add(pipe)
            return list(pipe.execute())
        by_node: dict[str, list[int]] = defaultdict(list)
        nodes: dict[str, Any] = {}
        for i, (key, _) in enumerate(ops):
            node = self.client.get_node_from_key(key)
            nodes[node.name] = node
            by_node[node.name].append(i)
        out: list[Any] = [None] * len(ops)
        for name, indices in by_node.items():
            pipe = nodes[name].redis_connection.pipeline(transaction=False)
            for i in indices:
                ops[i][1](pipe)
            for i, reply in zip(indices, pipe.execute(), strict=True):
                out[i] = reply
        return out

    def load_scripts(self) -> None:
        """Loads the write scripts on the server, or on every primary of a cluster."""

        def run() -> None:
            if self.cfg.cluster:
                targets = [n.redis_connection for n in self.client.get_primaries()]
            else:
                targets = [self.client]
            for target in targets:
                for source, _ in self._scripts.values():
                    target.script_load(source)

        self._call("load scripts", run)
        logger.info("write scripts loaded (%s)", "every primary" if self.cfg.cluster else "server")

    # ------------------------------------------------------------------ events
    def write_events(
        self, events: Sequence[Event], now: float | None = None, samples: SampleSpec | None = None
    ) -> WriteResult:
        if not events:
            return WriteResult()
        now = time.time() if now is None else now
        by_user: dict[str, list[Event]] = defaultdict(list)
        by_domain: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            by_user[event.uid].append(event)
            by_domain[event.domain].append(event)
        weights = self.cfg.popularity_weights
        ttl = self.cfg.dedupe_ttl_s
        n_ctx = samples.context_length if samples is not None else 0
        # On one server the users' script appends the samples itself; on a cluster the stream
        # lives in another slot, so the script returns them and a second step appends them.
        mode = "none" if samples is None else ("return" if self.cfg.cluster else "xadd")
        sampled = None if samples is None else samples.domains

        arrival = {id(e): i for i, e in enumerate(events)}

        def payload_of(e: Event) -> list[Any]:
            if samples is None:
                return [e.eid, repr(e.ts), _member(e)]
            piece = json.dumps([e.domain, e.iid], separators=(",", ":"))
            prefix = ""
            if sampled is None or e.domain in sampled:
                head = {"e": e.eid, "u": e.uid, "d": e.domain, "i": e.iid, "t": e.ts}
                prefix = json.dumps(head, separators=(",", ":"))[:-1] + ',"c":['
            return [e.eid, repr(e.ts), _member(e), piece, prefix, arrival[id(e)]]

        buckets = self._popularity_buckets(now)
        bucket_ttl = self._popularity_bucket_s() * (POPULARITY_BUCKETS + 1) + 1

        def run() -> WriteResult:
            ops: list[Op] = []
            groups = self._user_groups(list(by_user))
            for users in groups:
                keys: list[str] = [samples.key] if mode == "xadd" and samples else []
                payload: list[list[list[list[Any]]]] = []
                for user in users:
                    per_domain: dict[str, list[Event]] = defaultdict(list)
                    for e in by_user[user]:
                        per_domain[e.domain].append(e)
                    keys += [self.user_key(user, "seen"), self.user_key(user, "seq")]
                    if n_ctx:
                        keys.append(self.user_key(user, "ctx"))
                    groups_of_user = []
                    for domain, evs in per_domain.items():
                        keys.append(self.user_key(user, f"h:{domain}"))
                        groups_of_user.append([payload_of(e) for e in evs])
                    payload.append(groups_of_user)
                max_len = samples.max_len if samples is not None else 0
                args = [
                    now,
                    ttl,
                    self.cfg.history_length,
                    json.dumps(payload),
                    n_ctx,
                    max_len,
                    mode,
                    self.cfg.dedupe_max_per_user,
                ]
                ops.append(self._script("write_users", keys, args))
            for domain, evs in by_domain.items():
                keys = [self.pop_key(domain, "z"), self.pop_key(domain, "t0")]
                keys += [self.pop_key(domain, f"seen:{b}") for b in buckets]
                rows = [(e.eid, e.iid, repr(e.ts), weights.get(e.event_type, 1.0)) for e in evs]
                args = [now, bucket_ttl, self.cfg.popularity_half_life_s, json.dumps(rows)]
                ops.append(self._script("write_popularity", keys, args))
            # Every user of the batch is marked, duplicates included: if a pipeline was cut
            # short after the history write, the replay still refreshes the vector.
            marks = dict.fromkeys(by_user, now)
            ops.append((self.dirty_key, lambda pipe: pipe.zadd(self.dirty_key, marks)))
            replies = self._pipelined(ops)
            user_replies = replies[: len(groups)]
            written = int(sum(int(r[0]) for r in user_replies))
            recorded = int(sum(int(r[1]) for r in user_replies))
            if mode == "return" and samples is not None:
                # A crash between the two steps loses these samples (never the events): the
                # replay finds the events already written and records nothing.
                # Each slot's script returns [arrival index, sample] pairs: merged in arrival order.
                pairs = sorted((int(i), x) for r in user_replies for i, x in r[2])
                out = [x for _, x in pairs]
                if out:
                    self._pipelined(
                        [self._script("append_samples", [samples.key], [samples.max_len, *out])]
                    )
            return WriteResult(
                written=written,
                duplicates=len(events) - written,
                users=list(by_user),
                samples=recorded,
            )

        return self._call("write_events", run)

    def _popularity_bucket_s(self) -> int:
        return max(1, self.cfg.popularity_dedupe_window_s // POPULARITY_BUCKETS)

    def _popularity_buckets(self, now: float) -> list[int]:
        """The popularity dedupe buckets a write checks: the current one first, then the
        `POPULARITY_BUCKETS` before it (together they span at least the window)."""
        current = int(now // self._popularity_bucket_s())
        return [current - i for i in range(POPULARITY_BUCKETS + 1)]

    def _user_groups(self, users: list[str]) -> list[list[str]]:
        """Users whose keys one script may touch together: all of them on one server, those
        of one hash slot on a cluster."""
        if not self.cfg.cluster:
            return [users]
        from redis.cluster import key_slot

        slots: dict[int, list[str]] = defaultdict(list)
        for user in users:
            slots[key_slot(self.user_key(user, "seq").encode())].append(user)
        return list(slots.values())

    @staticmethod
    def _entries(rows: list[tuple[bytes, float]], domain: str) -> list[HistoryEntry]:
        out = []
        for member, score in rows:
            d = json.loads(member)
            out.append(HistoryEntry(d["e"], d["i"], domain, d["t"], float(score), d.get("v")))
        return out

    def history(self, user_id: str, domain: str) -> list[HistoryEntry]:
        key = self.user_key(user_id, f"h:{domain}")
        rows = self._call("history", lambda: self.client.zrange(key, 0, -1, withscores=True))
        return self._entries(rows, domain)

    def histories(
        self, user_ids: Sequence[str], domains: Sequence[str]
    ) -> dict[str, tuple[int, list[HistoryEntry]]]:
        def run() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for user in user_ids:
                # The counter is read first: the history read after it holds at least that
                # many events, so a vector never claims more than it saw.
                pipe.get(self.user_key(user, "seq"))
                for d in domains:
                    pipe.zrange(self.user_key(user, f"h:{d}"), 0, -1, withscores=True)
            return list(pipe.execute())

        replies = self._call("histories", run)
        out: dict[str, tuple[int, list[HistoryEntry]]] = {}
        step = 1 + len(domains)
        for n, user in enumerate(user_ids):
            chunk = replies[n * step : (n + 1) * step]
            entries: list[HistoryEntry] = []
            for d, rows in zip(domains, chunk[1:], strict=True):
                entries += self._entries(rows, d)
            entries.sort(key=lambda h: (h.timestamp, h.event_id))
            out[user] = (int(chunk[0] or 0), entries)
        return out

    def popularity(self, domain: str, k: int, now: float | None = None) -> list[tuple[str, float]]:
        now = time.time() if now is None else now

        def run() -> tuple[Any, Any]:
            pipe = self.client.pipeline(transaction=False)
            pipe.get(self.pop_key(domain, "t0"))
            pipe.zrevrange(self.pop_key(domain, "z"), 0, k - 1, withscores=True)
            t0, rows = pipe.execute()
            return t0, rows

        t0, rows = self._call("popularity", run)
        if t0 is None:
            return []
        scale = 2.0 ** ((float(t0) - now) / self.cfg.popularity_half_life_s)
        return [(_text(item) or "", float(score) * scale) for item, score in rows]

    # ------------------------------------------------------------------ vectors
    def write_user_vectors(self, vectors: Sequence[UserVector]) -> int:
        if not vectors:
            return 0

        def run() -> int:
            ops = []
            for v in vectors:
                blob = np.ascontiguousarray(v.vector, dtype=np.float32).tobytes()
                keys = [self.user_key(v.user_id, f"v:{v.domain}")]
                args = [v.seq, blob, v.model_version, repr(v.updated_at)]
                ops.append(self._script("write_vector", keys, args))
            return int(sum(self._pipelined(ops)))

        return self._call("write_user_vectors", run)

    def user_vector(self, user_id: str, domain: str) -> UserVector | None:
        key = self.user_key(user_id, f"v:{domain}")
        row = self._call("user_vector", lambda: self.client.hgetall(key))
        return self._vector(user_id, domain, row)

    def user_state(self, user_id: str, domains: Sequence[str], vector_domain: str) -> UserState:
        def run() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            pipe.get(self.user_key(user_id, "seq"))
            for d in domains:
                pipe.zrange(self.user_key(user_id, f"h:{d}"), 0, -1, withscores=True)
            pipe.hgetall(self.user_key(user_id, f"v:{vector_domain}"))
            return list(pipe.execute())

        replies = self._call("user_state", run)
        entries: list[HistoryEntry] = []
        for d, rows in zip(domains, replies[1:-1], strict=True):
            entries += self._entries(rows, d)
        entries.sort(key=lambda h: (h.timestamp, h.event_id))
        vector = self._vector(user_id, vector_domain, replies[-1])
        return UserState(user_id, int(replies[0] or 0), entries, vector)

    @staticmethod
    def _vector(user_id: str, domain: str, row: dict[bytes, bytes]) -> UserVector | None:
        if not row:
            return None
        return UserVector(
            user_id=user_id,
            domain=domain,
            vector=np.frombuffer(row[b"vector"], dtype=np.float32).copy(),
            model_version=_text(row[b"model_version"]) or "",
            updated_at=float(row[b"updated_at"]),
            seq=int(row[b"seq"]),
        )

    # ------------------------------------------------------------------ dirty users
    def dirty_users(self, limit: int, quiet_for_s: float = 0.0) -> list[tuple[str, float]]:
        cutoff = time.time() - quiet_for_s
        rows = self._call(
            "dirty_users",
            lambda: self.client.zrangebyscore(
                self.dirty_key, "-inf", cutoff, start=0, num=limit, withscores=True
            ),
        )
        return [(_text(user) or "", float(score)) for user, score in rows]

    def mark_dirty(self, user_ids: Sequence[str]) -> None:
        if user_ids:
            marks = dict.fromkeys(user_ids, time.time())
            self._call("mark_dirty", lambda: self.client.zadd(self.dirty_key, marks, nx=True))

    def clear_dirty(self, claims: Sequence[tuple[str, float]]) -> int:
        if not claims:
            return 0
        args: list[Any] = []
        for user, mark in claims:
            args += [user, repr(mark)]
        return int(
            self._call(
                "clear_dirty",
                lambda: self._pipelined([self._script("clear_dirty", [self.dirty_key], args)])[0],
            )
        )

    # ------------------------------------------------------------------ model and items
    def current_model(self) -> ModelPointer | None:
        raw = self._call("current_model", lambda: self.client.get(self.model_key))
        if raw is None:
            return None
        d = json.loads(raw)
        return ModelPointer(d["version"], d["uri"], float(d["published_at"]), d.get("reason", ""))

    def set_current_model(self, pointer: ModelPointer, reason: str = "publish") -> None:
        blob = json.dumps(
            {
                "version": pointer.version,
                "uri": pointer.uri,
                "published_at": pointer.published_at,
                "reason": reason,
            }
        )

        def run() -> None:
            # The pointer and its log entry change together (both keys share one hash tag).
            pipe = self.client.pipeline(transaction=True)
            pipe.set(self.model_key, blob)
            pipe.lpush(self.model_history_key, blob)
            pipe.ltrim(self.model_history_key, 0, 9999)
            pipe.execute()

        self._call("set_current_model", run)

    def model_history(self, limit: int = 100) -> list[ModelPointer]:
        rows = self._call(
            "model_history", lambda: self.client.lrange(self.model_history_key, 0, limit - 1)
        )
        out = []
        for raw in rows:
            d = json.loads(raw)
            out.append(
                ModelPointer(d["version"], d["uri"], float(d["published_at"]), d.get("reason", ""))
            )
        return out

    def put_item_texts(self, domain: str, texts: dict[str, str]) -> None:
        if texts:
            key = self.items_key(domain, "text")

            def run() -> None:
                pipe = self.client.pipeline(transaction=False)
                pipe.hset(key, mapping=texts)
                pipe.srem(self.items_key(domain, "pending"), *texts)
                pipe.execute()

            self._call("put_item_texts", run)

    def item_texts(self, domain: str, item_ids: Sequence[str]) -> dict[str, str]:
        if not item_ids:
            return {}
        key = self.items_key(domain, "text")
        rows = self._call("item_texts", lambda: self.client.hmget(key, list(item_ids)))
        return {i: _text(t) or "" for i, t in zip(item_ids, rows, strict=True) if t is not None}

    def mark_items_pending(self, domain: str, item_ids: Sequence[str]) -> None:
        if item_ids:
            key = self.items_key(domain, "pending")
            self._call("mark_items_pending", lambda: self.client.sadd(key, *item_ids))

    def pending_items(self, domain: str) -> set[str]:
        key = self.items_key(domain, "pending")
        return {
            _text(m) or "" for m in self._call("pending_items", lambda: self.client.smembers(key))
        }

    def queue_new_items(self, items: Sequence[NewItem]) -> None:
        if not items:
            return

        def run() -> None:
            pipe = self.client.pipeline(transaction=False)
            for it in items:
                vec = np.ascontiguousarray(it.text_vector, dtype=np.float32)
                pipe.xadd(
                    self.items_key(it.domain, "new"),
                    {
                        "item_id": it.item_id,
                        "text": it.text,
                        "text_vector": vec.tobytes(),
                        "model_version": it.model_version,
                    },
                    maxlen=100_000,
                    approximate=True,
                )
            pipe.execute()

        self._call("queue_new_items", run)

    def new_items(
        self, domain: str, after: str = "0", count: int = 1000
    ) -> list[tuple[str, NewItem]]:
        key = self.items_key(domain, "new")
        rows = self._call(
            "new_items",
            lambda: self.client.xrange(key, min=f"({after}" if after != "0" else "-", count=count),
        )
        out = []
        for entry_id, f in rows:
            out.append(
                (
                    _text(entry_id) or "",
                    NewItem(
                        domain=domain,
                        item_id=_text(f[b"item_id"]) or "",
                        text=_text(f[b"text"]) or "",
                        text_vector=np.frombuffer(f[b"text_vector"], dtype=np.float32).copy(),
                        model_version=_text(f[b"model_version"]) or "",
                    ),
                )
            )
        return out

    # ------------------------------------------------------------------ lifecycle
    def set_heartbeat(self, name: str, state: dict[str, Any], ttl_s: float) -> None:
        key = f"{self.prefix}:{{alive}}:{name}"
        blob = json.dumps(state, sort_keys=True)
        self._call("set heartbeat", lambda: self.client.set(key, blob, px=int(ttl_s * 1000)))

    def heartbeat(self, name: str) -> dict[str, Any] | None:
        raw = self._call("heartbeat", lambda: self.client.get(f"{self.prefix}:{{alive}}:{name}"))
        return None if raw is None else dict(json.loads(raw))

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.exceptions.RedisError:
            return False

    def close(self) -> None:
        self.client.close()
