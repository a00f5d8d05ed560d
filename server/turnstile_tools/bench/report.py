"""The results table: one row per workload, judged against the issue's targets."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from turnstile_tools.bench.latency import Figures
from turnstile_tools.bench.sizes import Sizes

MB = 1_000_000
SAME = 1.5
"""B8's "the same": the 10,000-message figure within this factor of the 100-message one."""

COLUMNS = ("id", "workload", "measured", "baseline", "ratio", "target", "result")


@dataclass
class Row:
    """One workload's line of the table, and the figures behind it."""

    id: str
    workload: str
    measured: str = ""
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    met: bool | None = None
    figures: Figures = field(default_factory=dict)
    error: str = ""

    @property
    def result(self) -> str:
        """`met`, `MISSED`, or `ERROR` when the workload could not be measured."""
        if self.error:
            return "ERROR"
        return "met" if self.met else "MISSED"

    def cells(self) -> list[str]:
        """The row's cells in `COLUMNS` order."""
        measured = f"error: {self.error}" if self.error else self.measured
        return [
            self.id,
            self.workload,
            measured,
            self.baseline,
            self.ratio,
            self.target,
            self.result,
        ]


def ms(seconds: float) -> str:
    """Seconds as milliseconds, to a sensible precision."""
    value = seconds * 1000
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"


def latencies(figures: Figures) -> str:
    """`p50 … / p99 …`."""
    return f"p50 {ms(figures['p50'])} / p99 {ms(figures['p99'])}"


def per_second(rate: float, unit: str) -> str:
    """A rate, with thousands separated."""
    return f"{rate:,.0f} {unit}/s"


def times(ratio: float) -> str:
    """A ratio such as `3.2x`."""
    return f"{ratio:.2f}x"


def workloads(sizes: Sizes) -> dict[str, str]:
    """What each row measures, at the sizes used."""
    return {
        "B1": f"serial WaitRun of echo (2 steps) on one thread, {sizes.b1_runs:,} runs",
        "B2": f"{sizes.b2_clients} concurrent clients, each its own thread, WaitRun loop"
        f" ({sizes.b2_clients * sizes.b2_runs_per_client:,} runs)",
        "B3": f"{sizes.b3_threads} threads x {sizes.b3_runs_per_thread} runs created back to"
        f" back with enqueue ({sizes.b3_rounds} rounds)",
        "B4": "a run waiting in a step, then CreateRun(interrupt) + JoinRun of the new one"
        f" ({sizes.b4_iterations} times)",
        "B5": f"{sizes.b5_streams} concurrent StreamRuns, each emitting {sizes.b5_chunks:,}"
        " message chunks (SDK)",
        "B6": f"B1 with {sizes.b6_threads:,} threads and {sizes.b6_checkpoints:,} checkpoints"
        " in the database, against B1 on an empty one",
        "B7": f"{sizes.b7_threads * sizes.b7_runs_per_thread:,} queued runs"
        f" ({sizes.b7_threads} threads, each behind a waiting run)",
        "B8": f"one thread grown to {sizes.b8_large:,} messages ({sizes.b8_runs} echo runs at"
        f" {sizes.b8_small:,} and at {sizes.b8_large:,})",
    }


def judge(workload: str, figures: Figures, echo: Figures, context: dict[str, Figures]) -> Row:
    """Builds the row of `workload` from its figures and the baselines."""
    row = Row(workload, "", figures=figures)
    judges = {
        "B1": _b1,
        "B2": _b2,
        "B3": _b3,
        "B4": _b4,
        "B5": _b5,
        "B6": _b6,
        "B7": _b7,
        "B8": _b8,
    }
    judges[workload](row, figures, echo, context)
    return row


def _b1(row: Row, f: Figures, echo: Figures, context: dict[str, Figures]) -> None:
    # Against the echo calls made in turns with the runs, not the baseline taken first.
    ratio = f["p50"] / f["echo_p50"]
    row.measured = latencies(f)
    row.baseline = f"echo call p50 {ms(f['echo_p50'])} (taking turns)"
    row.ratio, row.target, row.met = times(ratio), "p50 ≤ 4x one echo call", ratio <= 4


def _b2(row: Row, f: Figures, echo: Figures, context: dict[str, Figures]) -> None:
    ratio = f["rate"] / echo["rate"]
    row.measured = f"{per_second(f['rate'], 'runs')} ({latencies(f)})"
    row.baseline = f"echo {echo['clients']}-way {per_second(echo['rate'], 'calls')}"
    row.ratio, row.target = times(ratio), "≥ 1/3 of echo's rate and ≥ 1,500 runs/s"
    row.met = ratio >= 1 / 3 and f["rate"] >= 1500


def _b3(row: Row, f: Figures, echo: Figures, context: dict[str, Figures]) -> None:
    order = "order kept" if f["order_kept"] else "order BROKEN"
    row.measured = f"{per_second(f['rate'], 'runs')}, {order}"
    row.baseline = f"echo {echo['clients']}-way {per_second(echo['rate'], 'calls')}"
    row.ratio, row.target = times(f["rate"] / echo["rate"]), "order kept; ≥ 1,500 runs/s"
    row.met = bool(f["order_kept"]) and f["rate"] >= 1500


def _b4(row: Row, f: Figures, echo: Figures, context: dict[str, Figures]) -> None:
    row.measured, row.baseline = latencies(f), f"echo call p50 {ms(echo['p50'])}"
    row.ratio, row.target = times(f["p50"] / echo["p50"]), "p50 ≤ 5 ms"
    row.met = f["p50"] <= 0.005


def _b5(row: Row, f: Figures, echo: Figures, context: dict[str, Figures]) -> None:
    raw = context.get("stream", {})
    row.measured = f"{per_second(f['rate'], 'events')}; latency {latencies(f)}"
    if raw:
        row.baseline = f"raw stream {per_second(raw['rate'], 'msgs')}; {latencies(raw)}"
        row.ratio = times(f["rate"] / raw["rate"])
    row.target = "≥ 50,000 events/s; p99 ≤ 50 ms"
    row.met = f["rate"] >= 50_000 and f["p99"] <= 0.050


def _b6(row: Row, f: Figures, echo: Figures, context: dict[str, Figures]) -> None:
    ratio = f["p50"] / f["empty_p50"]
    row.measured = latencies(f)
    row.baseline = f"empty database p50 {ms(f['empty_p50'])} (taking turns)"
    row.ratio, row.target, row.met = times(ratio), "p50 ≤ 1.5x an empty database's", ratio <= 1.5


def _b7(row: Row, f: Figures, echo: Figures, context: dict[str, Figures]) -> None:
    per_run = (f["rss"] - f["idle_rss"]) / max(1, f["queued"])
    row.measured = (
        f"RSS {f['rss'] / MB:,.0f} MB (idle {f['idle_rss'] / MB:,.0f} MB,"
        f" {per_run / 1000:,.1f} kB per queued run; {f['queued']:,} pending)"
    )
    echo_rss = context.get("echo_memory", {}).get("VmRSS")
    row.baseline = f"echo server RSS {echo_rss / MB:,.0f} MB" if echo_rss else ""
    row.ratio = times(f["rss"] / echo_rss) if echo_rss else ""
    row.target, row.met = "RSS ≤ 300 MB", f["rss"] <= 300 * MB


def _b8(row: Row, f: Figures, echo: Figures, context: dict[str, Figures]) -> None:
    small, large = f"{f['small']:,}", f"{f['large']:,}"
    row.measured = (
        f"step {ms(f['small_values_step'])} → {ms(f['large_values_step'])};"
        f" growth {f['small_values_growth']:,.0f} → {f['large_values_growth']:,.0f} B/step"
    )
    row.baseline = f"the same at {small} messages"
    step, growth = f["values_step_ratio"], f["values_growth_ratio"]
    row.ratio = f"step {times(step)}, growth {times(growth)}"
    row.target = f"same at {small} and {large} messages (each ≤ {SAME}x)"
    row.met = step <= SAME and growth <= SAME


def table(rows: list[Row]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for row in rows:
        cells = [cell.replace("|", "\\|") for cell in row.cells()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_json(
    rows: list[Row], machine: dict[str, Any], sizes: Sizes, context: dict[str, Figures]
) -> str:
    """Everything measured, as JSON."""
    document = {
        "machine": machine,
        "sizes": sizes.as_dict(),
        "baselines": context,
        "rows": [{**asdict(row), "result": row.result} for row in rows],
    }
    return json.dumps(document, indent=2, sort_keys=False)
