"""The server's ``STATS`` as Prometheus metrics: ``stats --prometheus`` and the gateway's
``GET /metrics``.

Encoded by ``prometheus_client`` (the ``metrics`` extra; the ``http`` extra brings it
too), never by hand: one collector turns a ``STATS`` reply into metric families, and
``generate_latest`` writes the text format a Prometheus server scrapes. Every number of
``STATS`` is here: counters (``_total``) for what only grows since the server started,
gauges for the rest, per table and per connection door as labels.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["CONTENT_TYPE", "render"]

#: The text format's content type (``prometheus_client.CONTENT_TYPE_LATEST``).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_COUNTERS = {
    "requests": "requests answered since the server started",
    "passes": "writer passes (drain, apply, persist, publish, reply) since start",
    "dropped_replies": "replies dropped: the client was not reading or had gone",
    "storage_failures": "passes the store could not take (undone; writes refused)",
}
_GAUGES = {
    "seq": "the last committed seq",
    "uptime": "seconds since the server started",
    "last_pass_size": "requests in the last pass",
    "parked_claims": "blocking claims waiting for a record",
    "fd_limit": "the server's file descriptor limit",
}

#: The store's figures that only grow (the rest are gauges).
_STORE_COUNTERS = frozenset({"writes", "bytes", "syncs", "snapshots"})


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


class _StatsCollector:
    """One ``STATS`` reply as metric families (``prometheus_client``'s collector API)."""

    def __init__(self, stats: dict[str, Any]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            InfoMetricFamily,
        )

        st = self.stats
        for key, doc in _COUNTERS.items():
            if _number(st.get(key)) is not None:
                yield CounterMetricFamily(f"stateengine_{key}", doc, value=st[key])
        for key, doc in _GAUGES.items():
            if _number(st.get(key)) is not None:
                name = "stateengine_uptime_seconds" if key == "uptime" else f"stateengine_{key}"
                yield GaugeMetricFamily(name, doc, value=st[key])
        yield GaugeMetricFamily(
            "stateengine_writes_refused",
            "1 while writes are refused (the store cannot take them)",
            value=1 if st.get("writes_refused") else 0,
        )
        tables = st.get("tables") or {}
        for key, doc in (
            ("records", "records in the table"),
            ("version", "the table's version"),
            ("leases", "live leases (claimed records whose lease has not run out)"),
        ):
            family = GaugeMetricFamily(f"stateengine_table_{key}", doc, labels=["table"])
            for name, info in sorted(tables.items()):
                if _number(info.get(key)) is not None:
                    family.add_metric([name], info[key])
            yield family
        doors = st.get("connections") or {}
        keys = sorted({k for info in doors.values() for k in info if _number(info[k]) is not None})
        for key in keys:
            counter = key not in ("open", "cap")
            cls = CounterMetricFamily if counter else GaugeMetricFamily
            door_family = cls(
                f"stateengine_connections_{key}", f"connections: {key}", labels=["door"]
            )
            for door, info in sorted(doors.items()):
                if _number(info.get(key)) is not None:
                    door_family.add_metric([door], info[key])
            yield door_family
        store = st.get("store")
        if store:
            yield InfoMetricFamily(
                "stateengine_store",
                "the persistence backend (--store) and its fsync policy",
                value={"backend": str(store.get("backend")), "fsync": str(store.get("fsync"))},
            )
            for key, value in sorted(store.items()):
                if key in ("backend", "fsync") or _number(value) is None:
                    continue
                if key in _STORE_COUNTERS:
                    yield CounterMetricFamily(f"stateengine_store_{key}", f"store: {key}", value)
                else:
                    yield GaugeMetricFamily(f"stateengine_store_{key}", f"store: {key}", value)
        arena = st.get("arena")
        yield GaugeMetricFamily(
            "stateengine_arena_on", "1 while the shared-memory arena is on", value=1 if arena else 0
        )
        for key, value in sorted((arena or {}).items()):
            if _number(value) is not None:
                yield GaugeMetricFamily(f"stateengine_arena_{key}", f"arena: {key}", value=value)


def render(stats: dict[str, Any]) -> bytes:
    """A ``STATS`` result in Prometheus's text format.

    :raises ImportError: ``prometheus_client`` is missing (``pip install -e
        '.[metrics]'`` from the checkout).
    """
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatsCollector(stats))
    return generate_latest(registry)
