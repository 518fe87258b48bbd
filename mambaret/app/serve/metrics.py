"""Counters and histograms exposed at /metrics in Prometheus' text format (version 0.0.4).

The event loop is the only writer, so plain integers and floats need no locks."""
from __future__ import annotations

import bisect
from typing import Dict, Sequence, Tuple

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536)


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: Sequence[float]):
        self.name, self.help, self.buckets = name, help_text, tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def lines(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        cumulative = 0
        for bound, n in zip(self.buckets, self.counts):
            cumulative += n
            out.append(f'{self.name}_bucket{{le="{bound:g}"}} {cumulative}')
        out.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        out.append(f"{self.name}_sum {self.total:.6f}")
        out.append(f"{self.name}_count {self.count}")
        return out


class Metrics:
    """What the server counts: requests by endpoint and status, inputs and tokens embedded,
    the engine's batches (rows, tokens, queue wait, compute time) and what is in flight."""

    def __init__(self):
        self.requests: Dict[Tuple[str, int], int] = {}
        self.inputs = 0
        self.tokens = 0
        self.in_flight = 0
        self.queued_inputs = 0
        self.batch_rows = Histogram("mambaret_batch_inputs", "Inputs per engine forward (merged requests).",
                                    SIZE_BUCKETS)
        self.batch_tokens = Histogram("mambaret_batch_tokens", "Tokens per engine forward.", SIZE_BUCKETS)
        self.queue_seconds = Histogram("mambaret_queue_seconds",
                                       "Time a request waited before its forward started.", LATENCY_BUCKETS)
        self.compute_seconds = Histogram("mambaret_compute_seconds", "Time of one engine forward.",
                                         LATENCY_BUCKETS)
        self.request_seconds = Histogram("mambaret_request_seconds",
                                         "Time from a request's arrival to its response.", LATENCY_BUCKETS)

    def count_request(self, endpoint: str, status: int) -> None:
        key = (endpoint, status)
        self.requests[key] = self.requests.get(key, 0) + 1

    @property
    def errors(self) -> int:
        return sum(n for (_, status), n in self.requests.items() if status >= 400)

    def render(self) -> str:
        lines = ["# HELP mambaret_requests_total Requests answered, by endpoint and HTTP status.",
                 "# TYPE mambaret_requests_total counter"]
        for (endpoint, status), n in sorted(self.requests.items()):
            lines.append(f'mambaret_requests_total{{endpoint="{endpoint}",status="{status}"}} {n}')
        lines += ["# HELP mambaret_request_errors_total Requests answered with a 4xx or 5xx status.",
                  "# TYPE mambaret_request_errors_total counter", f"mambaret_request_errors_total {self.errors}",
                  "# HELP mambaret_inputs_total Texts (or token-id lists) embedded.",
                  "# TYPE mambaret_inputs_total counter", f"mambaret_inputs_total {self.inputs}",
                  "# HELP mambaret_tokens_total Tokens embedded (EOS included).",
                  "# TYPE mambaret_tokens_total counter", f"mambaret_tokens_total {self.tokens}",
                  "# HELP mambaret_requests_in_flight Requests being handled now.",
                  "# TYPE mambaret_requests_in_flight gauge", f"mambaret_requests_in_flight {self.in_flight}",
                  "# HELP mambaret_queued_inputs Inputs waiting for the engine now.",
                  "# TYPE mambaret_queued_inputs gauge", f"mambaret_queued_inputs {self.queued_inputs}"]
        for histogram in (self.batch_rows, self.batch_tokens, self.queue_seconds, self.compute_seconds,
                          self.request_seconds):
            lines += histogram.lines()
        return "\n".join(lines) + "\n"
