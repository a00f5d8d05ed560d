"""How big each workload is: the issue's sizes, `--quick` ones, and `--set NAME=VALUE`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace


@dataclass(frozen=True, slots=True)
class Sizes:
    """Workload sizes; the defaults are the issue's."""

    channels: int = 4
    """Connections the load generator spreads its calls over."""
    runs_per_thread: int = 25
    """Serial workloads move to a fresh thread after this many runs (B8 is about size)."""
    warmup: int = 20
    echo_calls: int = 2000
    echo_clients: int = 32
    echo_calls_per_client: int = 300
    b1_runs: int = 500
    b2_clients: int = 32
    b2_runs_per_client: int = 60
    b3_threads: int = 20
    b3_runs_per_thread: int = 10
    b3_rounds: int = 5
    b4_iterations: int = 100
    b5_streams: int = 100
    b5_chunks: int = 1000
    b6_threads: int = 100_000
    b6_checkpoints: int = 1_000_000
    b7_threads: int = 200
    b7_runs_per_thread: int = 50
    """Under the server's default limit of 100 queued runs per thread."""
    b8_small: int = 100
    b8_large: int = 10_000
    b8_runs: int = 50
    b9_calls: int = 20
    """Calls of each operation through the SDK, and as many through the stub, per size."""
    b9_large: int = 10_000
    lg_runs: int = 300
    """B10's and B11's serial runs of the two-node LangGraph graph, per subject."""
    lg_clients: int = 32
    lg_runs_per_client: int = 30
    lg_handoffs: int = 50
    lg_dev_runs: int = 50
    """B11's serial runs and handoffs: `langgraph dev` takes about a second for each."""

    @classmethod
    def quick(cls) -> Sizes:
        """Small sizes: every workload in about half a minute."""
        return cls(
            warmup=10,
            echo_calls=500,
            echo_calls_per_client=60,
            b1_runs=100,
            b2_runs_per_client=15,
            b3_rounds=2,
            b4_iterations=20,
            b5_streams=20,
            b5_chunks=200,
            b6_threads=10_000,
            b6_checkpoints=100_000,
            b7_threads=20,
            b8_large=1_000,
            b8_runs=20,
            b9_calls=5,
            b9_large=2_000,
            lg_runs=60,
            lg_runs_per_client=8,
            lg_handoffs=10,
            lg_dev_runs=10,
        )

    def b9_sizes(self) -> tuple[int, ...]:
        """B9's thread sizes: 2, 200 and 2,000 messages (where the targets are) and
        `b9_large`, those up to `b9_large`."""
        sizes = (2, 200, 2000, self.b9_large)
        return tuple(dict.fromkeys(size for size in sizes if size <= self.b9_large))

    def with_settings(self, settings: list[str]) -> Sizes:
        """Returns a copy with `NAME=VALUE` settings applied; raises ValueError on a bad one."""
        known = {f.name for f in fields(self)}
        changes: dict[str, int] = {}
        for setting in settings:
            name, equals, value = setting.partition("=")
            if not equals or name not in known:
                raise ValueError(
                    f"--set {setting!r}: expected NAME=VALUE, NAME one of {sorted(known)}"
                )
            try:
                number = int(value.replace("_", ""))
            except ValueError:
                raise ValueError(f"--set {setting!r}: {value!r} is not an integer") from None
            if number < 1:
                raise ValueError(f"--set {setting!r}: must be at least 1")
            changes[name] = number
        return replace(self, **changes)

    def as_dict(self) -> dict[str, int]:
        """The sizes by name."""
        return asdict(self)
