"""Reading a server's Prometheus /metrics from tests and benchmarks (prometheus_client's own parser)."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return reply.read().decode()


def sample(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels` (0 when there is none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def labels_of(text: str, name: str) -> list[dict[str, str]]:
    """The label sets of every sample called `name` (an Info metric's content, for one)."""
    return [dict(s.labels) for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


def calls_served(url: str, method: str = "Predict", code: str = "OK") -> int:
    """How many `method` calls the server at /metrics `url` answered with `code`."""
    return int(sample(scrape(url), "digits_requests_total", method=method, code=code))


__all__ = ["calls_served", "labels_of", "sample", "scrape"]
