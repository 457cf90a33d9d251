"""Prometheus metrics, on a registry of our own so tests and embedded runs do not collide."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.app_messages = Counter("fixalloc_fix_app_messages_total",
                                    "Inbound FIX application messages", ["session", "msg_type"],
                                    registry=r)
        self.duplicates = Counter("fixalloc_duplicate_reports_total",
                                  "Execution reports dropped as PossDup/PossResend repeats",
                                  ["session"], registry=r)
        self.alerts = Counter("fixalloc_alerts_total", "Alerts raised", ["kind"], registry=r)
        self.refused = Counter("fixalloc_refused_messages_total",
                               "Inbound messages refused with a session Reject (too large, "
                               "over the rate limit, not recordable)", ["session"], registry=r)
        self.logons = Counter("fixalloc_session_logons_total", "Logons per session",
                              ["session"], registry=r)
        self.orders_awaiting_ack = Gauge(
            "fixalloc_orders_awaiting_broker_ack",
            "Routed or queued block orders the broker has not acknowledged yet", registry=r)
        self.fills = Counter("fixalloc_fills_total", "Fills applied to the ledger", ["broker"],
                             registry=r)
        self.orders = Counter("fixalloc_orders_total", "Block orders by outcome", ["outcome"],
                              registry=r)
        self.orders_released = Counter(
            "fixalloc_orders_released_total",
            "Finished orders let go from the dispatcher's memory", registry=r)
        self.orders_loaded_back = Counter(
            "fixalloc_orders_loaded_back_total",
            "Released orders loaded back for a late event (bust, operator action)", registry=r)
        self.orders_in_memory = Gauge(
            "fixalloc_orders_in_memory", "Orders the dispatcher holds (still moving)",
            registry=r)
        self.allocations = Counter("fixalloc_allocations_total", "Allocations by state reached",
                                   ["state"], registry=r)
        self.allocation_seconds = Histogram(
            "fixalloc_last_fill_to_j_seconds", "From the order's last fill to its J on the wire",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r)
        self.decision_seconds = Histogram(
            "fixalloc_decision_seconds", "Engine time per allocation decision",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1), registry=r)
        self.inbox_depth = Gauge("fixalloc_inbox_depth", "Events waiting for the dispatcher",
                                 registry=r)
        self.session_up = Gauge("fixalloc_session_logged_on", "1 when the FIX session is logged on",
                                ["session"], registry=r)
        # The end-of-day sweep (gateway/posttrade/sweep.py) and the affirmation lifecycle.
        self.affirmed_same_day_ratio = Gauge(
            "fixalloc_affirmed_same_day_ratio",
            "Tickets of the latest swept trade date affirmed on that date, over all its "
            "tickets (set by each sweep run)", registry=r)
        self.open_exceptions = Gauge("fixalloc_open_exceptions",
                                     "Open post-trade exceptions by kind", ["kind"], registry=r)
        self.time_to_affirmation_seconds = Histogram(
            "fixalloc_time_to_affirmation_seconds",
            "From the J on the wire to the ticket's affirmation (AU 940=3)",
            buckets=(60, 300, 600, 900, 1800, 2700, 3600, 5400, 7200, 10800, 14400, 21600,
                     28800, 43200, 86400), registry=r)
        self.dispatcher_errors = Counter("fixalloc_dispatcher_errors_total",
                                         "Events whose handling raised (logged, skipped)",
                                         registry=r)
        self.sweep_runs = Counter("fixalloc_sweep_runs_total",
                                  "End-of-day sweep runs stored", registry=r)
        self.sweep_last_run = Gauge("fixalloc_sweep_last_run_timestamp_seconds",
                                    "When the last sweep report was stored (Unix time)",
                                    registry=r)


METRICS = Metrics()
