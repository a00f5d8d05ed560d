"""The benchmark suite, `turnstile bench` and `scripts/bench.py`.

Starts a raw `grpc.aio` echo server and, for each workload, a fresh `turnstile serve` on a
temporary database, each in its own process; drives them from this process; prints a table of
medians, p99s and ratios against the echo server's figures, every target met or missed.
"""

from __future__ import annotations

from turnstile_tools.bench.suite import main

__all__ = ["main"]
