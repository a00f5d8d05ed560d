"""The results table: one row per workload, judged against the issue's targets."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from turnstile_tools.bench.latency import Figures
from turnstile_tools.bench.sdk import OPERATIONS, thread_sizes
from turnstile_tools.bench.sdk import TARGETS as B9_TARGETS
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
        "B9": "SDK against the generated stub: wait, join, get_state, get_history, values"
        f" stream on threads of {', '.join(f'{n:,}' for n in sizes.b9_sizes())} messages"
        f" ({sizes.b9_calls} calls each, in turns)",
        "B10": "a two-node LangGraph StateGraph: serial WaitRun (durable checkpoints) against"
        f" the same graph's in-process ainvoke, in turns ({sizes.lg_runs:,} runs each)",
        "B11": "the same graph served by `langgraph dev` (in-memory): serial runs.wait,"
        f" {sizes.lg_clients} callers, interrupt handoff; against Turnstile's B10 figures",
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
        "B9": _b9,
        "B10": _b10,
        "B11": _b11,
    }
    judges[workload](row, figures, echo, context)
    return row


LG_RATE = 2.0
"""B10: served runs/s against in-process `AsyncSqliteSaver`'s, at least this many times."""
LG_TIME = 1.5
"""B10: served time per run against in-process `InMemorySaver`'s, at most this many times."""


def _b10(row: Row, f: Figures, echo: Figures, context: dict[str, Figures]) -> None:
    # Serial: time per run is the median; runs/s one over it.
    rate, time = f["sqlite_p50"] / f["served_p50"], f["served_p50"] / f["memory_p50"]
    row.measured = (
        f"{ms(f['served_p50'])} per run (p50), {per_second(1 / f['served_p50'], 'runs')};"
        f" server CPU {ms(f['served_cpu'])} per run"
    )
    row.baseline = (
        f"in process: AsyncSqliteSaver {ms(f['sqlite_p50'])}"
        f" ({per_second(1 / f['sqlite_p50'], 'runs')}), InMemorySaver {ms(f['memory_p50'])},"
        f" none {ms(f['none_p50'])} (CPU {ms(f['sqlite_cpu'])} / {ms(f['memory_cpu'])} /"
        f" {ms(f['none_cpu'])})"
    )
    row.ratio = f"runs/s {times(rate)} AsyncSqliteSaver's; time {times(time)} InMemorySaver's"
    row.target = f"≥ {LG_RATE:g}x AsyncSqliteSaver's runs/s; ≤ {LG_TIME:g}x InMemorySaver's time"
    row.met = rate >= LG_RATE and time <= LG_TIME


def lg_concurrent_row(f: Figures) -> Row:
    """B10 with `lg_clients` callers: the rates, served and in process."""
    row = Row(
        "B10-32",
        f"B10 with {f['clients']} callers at once, each on its own threads (in process:"
        " as many tasks)",
        figures={k: v for k, v in f.items() if "rate" in k or "concurrent" in k},
    )
    rate, time = f["served_rate"] / f["sqlite_rate"], f["memory_rate"] / f["served_rate"]
    row.measured = (
        f"{per_second(f['served_rate'], 'runs')}; server CPU"
        f" {ms(f['served_cpu_concurrent'])} per run"
    )
    row.baseline = (
        f"in process: AsyncSqliteSaver {per_second(f['sqlite_rate'], 'runs')}, InMemorySaver"
        f" {per_second(f['memory_rate'], 'runs')}, none {per_second(f['none_rate'], 'runs')}"
    )
    row.ratio = f"runs/s {times(rate)} AsyncSqliteSaver's; time {times(time)} InMemorySaver's"
    row.target = f"≥ {LG_RATE:g}x AsyncSqliteSaver's runs/s; ≤ {LG_TIME:g}x InMemorySaver's time"
    row.met = rate >= LG_RATE and time <= LG_TIME
    return row


def lg_floor_row(f: Figures) -> Row:
    """B10's floor: what a served run of the same shape costs without LangGraph (a native `echo`
    WaitRun on the same server, in the same serial turns: two steps, each written durably, as
    B10's two nodes are), plus LangGraph's own in-process run (`InMemorySaver`), against the time
    B10's target allows."""
    row = Row(
        "B10-floor",
        "what a served LangGraph run cannot go below: a native echo WaitRun on the same server"
        " (gRPC, admission and start, its two steps written durably, the end) plus the graph's"
        " in-process InMemorySaver run",
        figures={k: v for k, v in f.items() if k.startswith(("native", "memory"))},
    )
    if "native_p50" not in f:
        row.measured, row.met = "the native echo was not measured", False
        return row
    floor, allowed = f["native_p50"] + f["memory_p50"], LG_TIME * f["memory_p50"]
    row.measured = (
        f"native echo {ms(f['native_p50'])} (p50; server CPU {ms(f['native_server_cpu'])} per"
        f" run) + InMemorySaver {ms(f['memory_p50'])} = {ms(floor)}; B10 served"
        f" {ms(f['served_p50'])}"
    )
    row.baseline = f"B10's time target: {LG_TIME:g}x InMemorySaver's = {ms(allowed)}"
    row.ratio = f"floor {times(floor / allowed)} the target"
    row.target = "floor ≤ the target (else no served run as durable as B10's can meet it)"
    row.met = floor <= allowed
    return row


def _b11(row: Row, f: Figures, echo: Figures, context: dict[str, Figures]) -> None:
    ours = context.get("B10", {})
    row.measured = (
        f"serial {ms(f['dev_p50'])} per run (p50); {f.get('clients', 32)} callers"
        f" {per_second(f['dev_rate'], 'runs')}; handoff p50 {ms(f['dev_handoff_p50'])};"
        f" server CPU {ms(f['dev_cpu'])} per run"
    )
    if not ours:
        row.baseline, row.target, row.met = "B10 not measured", "Turnstile's B10 figures", False
        return
    row.baseline = (
        f"Turnstile: {ms(ours['served_p50'])}; {per_second(ours['served_rate'], 'runs')};"
        f" handoff p50 {ms(ours['handoff_p50'])}"
    )
    serial = f["dev_p50"] / ours["served_p50"]
    rate = ours["served_rate"] / f["dev_rate"]
    handoff = f["dev_handoff_p50"] / ours["handoff_p50"]
    row.ratio = (
        f"Turnstile faster: serial {times(serial)}, {times(rate)} the runs/s, handoff"
        f" {times(handoff)}"
    )
    row.target = "Turnstile (durable) at least as fast as langgraph dev (in memory)"
    row.met = serial >= 1 and rate >= 1 and handoff >= 1


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
    row.ratio = times(ratio)
    if _pinned(context):
        row.target = "≥ 1/3 of echo's rate and ≥ 1,500 runs/s"
        row.met = ratio >= 1 / 3 and f["rate"] >= 1500
    else:
        row.target = "≥ 1/3 of echo's rate (1,500 runs/s: with --pin)"
        row.met = ratio >= 1 / 3


def _b3(row: Row, f: Figures, echo: Figures, context: dict[str, Figures]) -> None:
    order = "order kept" if f["order_kept"] else "order BROKEN"
    row.measured = f"{per_second(f['rate'], 'runs')}, {order}"
    row.baseline = f"echo {echo['clients']}-way {per_second(echo['rate'], 'calls')}"
    row.ratio = times(f["rate"] / echo["rate"])
    if _pinned(context):
        row.target, row.met = "order kept; ≥ 1,500 runs/s", f["order_kept"] and f["rate"] >= 1500
    else:
        row.target, row.met = "order kept (1,500 runs/s: with --pin)", bool(f["order_kept"])


def _pinned(context: dict[str, Figures]) -> bool:
    return bool(context.get("placement", {}).get("pinned"))


CPU_RATIO = 3.0
"""A run's server CPU against an echo call's: at most this many times."""


def cpu_row(workload: str, f: Figures, echo: Figures) -> Row:
    """The server CPU per run of `workload` (B2, B3), against the echo server's per call."""
    row = Row(
        f"{workload}-cpu", f"{workload}'s runs: the server's CPU per run, against an echo call's"
    )
    row.figures = {"cpu_per_run": f["cpu_per_run"]}
    row.measured = f"server CPU {ms(f['cpu_per_run'])} per run (all its threads, /proc)"
    per_call = echo.get("cpu_per_call", 0.0)
    if not per_call:  # below /proc's tick (10 ms) over the whole baseline: too few calls
        row.baseline, row.ratio, row.target = "echo server CPU too small to measure", "", "≤ 3x"
        row.met = False
        return row
    ratio = f["cpu_per_run"] / per_call
    row.baseline = f"echo server CPU {ms(per_call)} per call (same bench run)"
    row.ratio, row.target, row.met = (
        times(ratio),
        f"≤ {CPU_RATIO:g}x an echo call's",
        (ratio <= CPU_RATIO),
    )
    return row


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


def _b9(row: Row, f: Figures, echo: Figures, context: dict[str, Figures]) -> None:
    def worst(size: int) -> str:
        return max(OPERATIONS, key=lambda operation: f[f"{operation}_{size}_ratio"])

    sizes = thread_sizes(f)
    row.measured = "worst SDK / stub: " + "; ".join(
        f"{size:,} messages {worst(size)} {times(f[f'{worst(size)}_{size}_ratio'])}"
        for size in sizes
    )
    row.baseline = "the stub's same calls, in turns"
    judged = [size for size in sizes if size in B9_TARGETS] or sizes
    row.ratio = ", ".join(times(f[f"{worst(size)}_{size}_ratio"]) for size in judged)
    row.target = " and ".join(f"≤ {limit}x at {size:,}" for size, limit in B9_TARGETS.items())
    row.met = bool(f["met"])


def b9_table(f: Figures) -> str:
    """B9 in full: each operation's SDK and stub p50 and their ratio, by thread size."""
    sizes = thread_sizes(f)
    head = ["operation", *(f"{size:,} messages: SDK / stub" for size in sizes)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for operation in OPERATIONS:
        cells = [operation]
        for size in sizes:
            ratio = f[f"{operation}_{size}_ratio"]
            limit = B9_TARGETS.get(size)
            verdict = "" if limit is None else (" met" if ratio <= limit else " MISSED")
            cells.append(
                f"{ms(f[f'{operation}_{size}_sdk'])} / {ms(f[f'{operation}_{size}_stub'])}"
                f" = {times(ratio)}{verdict}"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
