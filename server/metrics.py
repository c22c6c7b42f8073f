"""Prometheus metrics: requests by method and status, latency, batch sizes, queue depth, model version
and model-process restarts.

Each server gets its own registry (tests may build several in one process). Label children for
the common case are bound once, so the hot path costs one dict lookup and two increments."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "digits_requests",
            "RPCs handled, by method and gRPC status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "digits_request_latency_seconds",
            "Server-side RPC latency",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "digits_batch_size", "Requests per model call", buckets=BATCH_BUCKETS, registry=self.registry
        )
        self.queue_depth = Gauge("digits_queue_depth", "Requests waiting for the model", registry=self.registry)
        self.dropped = Counter(
            "digits_dropped", "Requests dropped before inference, by reason", ["reason"], registry=self.registry
        )
        self.model = Info("digits_model", "The loaded model", registry=self.registry)
        self.model_restarts = Counter(
            "digits_model_restarts", "Model processes started to replace one that died or hung", registry=self.registry
        )
        self.crashes = Counter(
            "digits_process_crashes",
            "Helper processes that died or hung, by process (preprocessing worker, model)",
            ["process"],
            registry=self.registry,
        )
        self.stream_items = Counter(
            "digits_stream_items",
            "PredictStream items answered, by outcome (OK or the error reason)",
            ["outcome"],
            registry=self.registry,
        )
        self._children: dict[tuple[str, str], tuple] = {}
        self._stream_children: dict[str, Counter] = {}

    def observe(self, method: str, code: str, seconds: float) -> None:
        key = (method, code)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self.requests.labels(method, code), self.latency.labels(method))
        children[0].inc()
        children[1].observe(seconds)

    def stream_item(self, outcome: str) -> None:
        child = self._stream_children.get(outcome)
        if child is None:
            child = self._stream_children[outcome] = self.stream_items.labels(outcome)
        child.inc()

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Expose /metrics over HTTP on a background thread."""
        start_http_server(port, addr=host, registry=self.registry)
