"""``GET /metrics`` in Prometheus' text format, read from the state store at each scrape.

The run figures are gauges of what the operation log holds now (it is pruned by ``settings.log_retention_*``),
not counters since a start: a console restarted, or a second console on the same store, reports the same.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ._views import health

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from ..state import StateStore

__all__ = ["CONTENT_TYPE", "metrics_text"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_OUTCOMES = ("read", "written", "skipped", "uncertain", "failed")


class _StoreCollector(Collector):
    def __init__(self, store: StateStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        runs = GaugeMetricFamily("mailconnector_runs", "Runs in the operation log, by operation and status.",
                                 labels=["operation", "status"])
        records = GaugeMetricFamily("mailconnector_records", "Records of the runs in the operation log, by "
                                    "operation and outcome (read, written, skipped, uncertain, failed).",
                                    labels=["operation", "outcome"])
        failures = GaugeMetricFamily("mailconnector_failed_runs", "Runs in the operation log that failed, "
                                     "ended in an error or were interrupted, by operation.", labels=["operation"])
        per_op: dict[str, dict[str, int]] = {}
        failed_runs: dict[str, int] = {}
        for row in self.store.run_totals():
            runs.add_metric([row["operation"], row["status"]], row["runs"])
            sums = per_op.setdefault(row["operation"], dict.fromkeys(_OUTCOMES, 0))
            for outcome in _OUTCOMES:
                sums[outcome] += row[f"records_{outcome}"]
            bad = row["runs"] if row["status"] in ("failed", "error", "interrupted") else 0
            failed_runs[row["operation"]] = failed_runs.get(row["operation"], 0) + bad
        for op, sums in per_op.items():
            for outcome, n in sums.items():
                records.add_metric([op, outcome], n)
            failures.add_metric([op], failed_runs[op])
        yield runs
        yield records
        yield failures
        uncertain = GaugeMetricFamily("mailconnector_uncertain_sends", "Send ledger entries that may have been "
                                      "delivered and wait to be resolved.")
        uncertain.add_metric([], len(self.store.ledger_entries(status="uncertain", limit=1_000_000)))
        yield uncertain
        now = time.time()
        heartbeat = GaugeMetricFamily("mailconnector_lease_seconds_since_heartbeat", "Seconds since each "
                                      "consumer (a watcher, a run) last renewed its lease.", labels=["lease", "kind"])
        poll = GaugeMetricFamily("mailconnector_watcher_seconds_since_poll", "Seconds since each watcher last "
                                 "looked for new mail.", labels=["lease"])
        flagged = GaugeMetricFamily("mailconnector_lease_flagged", "1 when the health page flags the consumer "
                                    "(silent or stuck), else 0.", labels=["lease", "kind"])
        for lease in health(self.store, now=now):
            heartbeat.add_metric([lease["name"], lease["kind"]], lease["seconds_since_heartbeat"])
            if lease["seconds_since_poll"] is not None:
                poll.add_metric([lease["name"]], lease["seconds_since_poll"])
            flagged.add_metric([lease["name"], lease["kind"]], 1 if lease["flag"] else 0)
        yield heartbeat
        yield poll
        yield flagged


def metrics_text(store: StateStore) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StoreCollector(store))
    return generate_latest(registry)
