"""Live view of batch runs written by another process: per-stage progress, throughput, ETA, tokens,
failures, recent events, and for a scaled-out run (`autointerp batch --ray`) its workers. It only reads what the
batch's RunLog writes (runs, progress, events, workers)."""

from __future__ import annotations

import time
from collections import Counter, deque
from datetime import datetime

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import ProgressBar, Sparkline, Static

from autointerp.store.runs import STALE_HEARTBEAT_S, WORKER_STATES
from autointerp.store.text import printable
from autointerp.store.views import MonitorSnapshot

STAGES = ("cache", "explain", "score")
STATUS_STYLE = {"running": "bold green", "done": "bold", "stopped": "bold yellow", "failed": "bold red"}
WORKER_STYLE = {"busy": "green", "dead": "bold red", "restarting": "yellow", "starting": "cyan", "done": "dim"}
SUMMARY_STYLE = {"dead": "bold red", "restarting": "yellow"}
ROLE_UNIT = {"cache": "chunk", "llm": "latent"}  # what a worker of each role re-runs when it dies


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def run_header(snap: MonitorSnapshot) -> Text:
    text = Text()
    c = snap.cache
    text.append("cache: ", "bold")
    text.append(f"{c['tokens']:,} tokens in {c['chunks']} chunks")
    if c.get("target_tokens"):
        text.append(f" (target {c['target_tokens']:,})")
    text.append(f", {c['latents']:,} latents with statistics   ")
    if c.get("site_problem"):  # set by `autointerp upgrade` for caches made from the wrong site
        text.append("\n")
        text.append(printable(c["site_problem"]), "bold red")
        text.append("\n")
    k = snap.counts
    text.append("results: ", "bold")
    text.append(f"{k['explained']:,} explained, {k['failed']:,} failed explanations, {k['scored']:,} scored\n")
    if not snap.runs:
        text.append("no batch has run on this database yet (start one: autointerp batch --db FILE)", "italic")
        return text
    run = snap.runs[0]
    status = (
        "probably killed (no heartbeat for " + _dur(run["silent_s"]) + ")" if run["probably_killed"] else run["status"]
    )
    text.append(f"run {run['id']}: ", "bold")
    text.append(
        printable(status), STATUS_STYLE.get(run["status"], "bold") if not run["probably_killed"] else "bold red"
    )
    text.append(
        f"   {printable(run['selection'] or '')}, {run['n_latents'] or '?'} latents, pid {run['pid']} on "
        f"{printable(run['host'])}, started {printable(run['started_at'])}"
    )
    if run["message"]:
        text.append("\n")
        # A message may quote corpus text or a server's error: shown literally, never parsed as markup.
        text.append(printable(run["message"]), "dim")
    return text


def stage_line(row: dict, rate: float | None) -> Text:
    unit = row["unit"] or "latents"
    text = Text()
    text.append(f"{printable(row['stage']):<8}", "bold")
    text.append(f"{row['done']:,}/{row['total']:,} {unit}")
    if row["skipped"]:
        text.append(f" ({row['skipped']:,} already done)")
    text.append(f"  failed {row['failed']:,}", "bold red" if row["failed"] else "")
    if row["prompts"]:
        text.append(
            f"  {row['prompts']:,} prompts, {row['prompt_tokens']:,} prompt tok"
            f" ({max(row['cached_tokens'], 0):,} cached), {row['output_tokens']:,} output tok"
        )
    text.append(f"  elapsed {_dur(row['wall_s'])}")
    if row["ended_at"]:
        text.append("  finished", "green")
    elif rate:
        text.append(f"  {rate * 60:,.1f} {unit}/min  ETA {_dur((row['total'] - row['done']) / rate)}")
    return text


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _age(stamp: str | None, now: datetime) -> float | None:
    try:
        return (now - datetime.fromisoformat(stamp)).total_seconds() if stamp else None
    except (TypeError, ValueError):  # a stamp in another format, or without a time zone
        return None


def _short_dur(seconds: float | None) -> str:
    return "-" if seconds is None else f"{max(0, int(seconds))}s" if seconds < 60 else _dur(seconds)


def _rate(rate: float | None, unit: str | None) -> str:
    if rate is None:
        return "-"
    number = f"{rate:,.0f}" if abs(rate) >= 100 else f"{rate:,.1f}"
    return f"{number} {printable(unit)}" if unit else number


def cluster_summary(workers: list[dict]) -> Text:
    """One line: how many workers in which state, and how many units were taken from dead ones and run again."""
    states = Counter(w["state"] for w in workers)
    order = [*WORKER_STATES, *sorted(set(states) - set(WORKER_STATES))]
    text = Text()
    text.append(f"{_plural(len(workers), 'worker')}: ", "bold")
    for i, state in enumerate(s for s in order if states[s]):
        text.append(", " if i else "")
        text.append(f"{states[state]:,} {printable(state)}", SUMMARY_STYLE.get(state, ""))
    reruns: Counter[str] = Counter()
    for w in workers:
        reruns[ROLE_UNIT.get(w["role"], "unit")] += w["rerun"] or 0
    rerun_parts = [f"{_plural(n, unit)} re-run" for unit, n in sorted(reruns.items()) if n]
    if rerun_parts:
        text.append("; " + ", ".join(rerun_parts), "yellow")
    return text


def cluster_table(workers: list[dict], now: datetime, live: bool = True) -> Table:
    """The workers of a scaled-out run: what each is on, how fast it goes, how long since it last reported. While
    the run is live, a busy or starting worker silent for over STALE_HEARTBEAT_S shows its age in yellow."""
    table = Table(box=None, pad_edge=False, header_style="bold", expand=True)
    columns: list[tuple[str, dict]] = [
        ("worker", {"no_wrap": True}),
        ("role", {}),
        ("node", {"no_wrap": True}),
        ("state", {}),
        ("on", {"no_wrap": True}),
        ("done", {"justify": "right"}),
        ("rate", {"justify": "right", "no_wrap": True}),
        ("rerun", {"justify": "right"}),
        ("age", {"justify": "right", "no_wrap": True}),
    ]
    with_error = any(w["error"] for w in workers)
    if with_error:
        columns.append(("error", {"ratio": 1, "overflow": "ellipsis", "no_wrap": True}))
    for col, kw in columns:
        table.add_column(col, **kw)
    for w in workers:
        age = _age(w["updated_at"], now)
        stale = live and w["state"] in ("busy", "starting") and age is not None and age > STALE_HEARTBEAT_S
        cells: list[Text | str] = [
            Text(printable(w["worker"])),
            Text(printable(w["role"])),
            Text(printable(w["node"] or "-")),
            Text(printable(w["state"]), WORKER_STYLE.get(w["state"], "")),
            Text(printable(w["unit"] or "-")),
            f"{w['done'] or 0:,}",
            _rate(w["rate"], w["rate_unit"]),
            Text(f"{w['rerun'] or 0:,}", "yellow" if w["rerun"] else ""),
            Text(_short_dur(age), "yellow" if stale else ""),
        ]
        if with_error:
            # An error may quote a traceback or a server's answer: one line, literal, never parsed as markup.
            cells.append(Text(printable(" ".join((w["error"] or "").split())), "red"))
        table.add_row(*cells)
    return table


def events_table(snap: MonitorSnapshot) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold", expand=True)
    for col, kw in (("at", {"no_wrap": True}), ("run", {}), ("stage", {}), ("kind", {}), ("message", {"ratio": 1})):
        table.add_column(col, **kw)
    for e in snap.events:
        style = "red" if e["kind"] in ("error", "failed", "outage") else "yellow" if e["kind"] == "warning" else ""
        table.add_row(
            Text(printable((e["at"] or "")[11:19])),
            str(e["run"] or ""),
            Text(printable(e["stage"] or "")),
            Text(printable(e["kind"] or ""), style),
            Text(printable(e["message"] or "")),
        )
    return table


class MonitorPane(Vertical, can_focus=True):
    DEFAULT_CSS = """
    MonitorPane { padding: 0 1; }
    MonitorPane .m-head { height: auto; margin-bottom: 1; }
    MonitorPane .m-stage { height: auto; }
    MonitorPane ProgressBar { margin-bottom: 1; }
    MonitorPane Sparkline { height: 3; margin-bottom: 1; }
    MonitorPane .m-cluster { height: auto; max-height: 50%; border: round $secondary; margin-bottom: 1; }
    MonitorPane .m-events { height: 1fr; border: round $secondary; }
    """

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        # (monotonic time, units done) per (run, stage): the rate comes from what this monitor saw, or,
        # attached mid-run with one sample only, from the stage's own average.
        self.samples: dict[tuple[int, str], deque] = {}
        self.rates: deque = deque(maxlen=120)
        self.snapshot: MonitorSnapshot | None = None
        self.ready = False  # mounted lazily: a snapshot read before its widgets exist waits for the next poll

    class Mounted(Message):
        """The pane is on screen (it is mounted lazily): the app reads a snapshot for it now."""

    def on_mount(self) -> None:
        self.ready = True  # its widgets exist from here on
        self.post_message(self.Mounted())

    def compose(self) -> ComposeResult:
        yield Static("reading…", classes="m-head")
        for stage in STAGES:
            yield Static("", classes=f"m-stage m-{stage}")
            yield ProgressBar(total=100, show_eta=False, id=f"bar-{stage}")
        yield Static("throughput of the running stage (units/min, as seen by this monitor):", classes="m-spark-label")
        yield Sparkline([], summary_function=max)
        # A scaled-out run's workers (`autointerp batch --ray`); hidden for a run without any.
        with VerticalScroll(classes="m-cluster") as cluster:
            cluster.border_title = "cluster"
            cluster.display = False
            yield Static("", classes="m-cluster-summary")
            yield Static("", classes="m-cluster-body")
        with VerticalScroll(classes="m-events"):
            yield Static("", classes="m-events-body")

    def _rate(self, run_id: int, row: dict) -> float | None:
        q = self.samples.setdefault((run_id, row["stage"]), deque(maxlen=30))
        now = time.monotonic()
        if not q or q[-1][1] != row["done"] or now - q[-1][0] > 5:
            q.append((now, row["done"]))
        if len(q) >= 2 and q[-1][0] > q[0][0] and q[-1][1] > q[0][1]:
            return (q[-1][1] - q[0][1]) / (q[-1][0] - q[0][0])
        fresh = row["done"] - (row["skipped"] or 0)
        return fresh / row["wall_s"] if row["wall_s"] and fresh > 0 else None

    def show(self, snap: MonitorSnapshot) -> None:
        self.snapshot = snap
        self.query_one(".m-head", Static).update(run_header(snap))
        run = snap.runs[0] if snap.runs else None
        rows = {r["stage"]: r for r in run["stages"]} if run else {}
        active_rate = None
        for stage in STAGES:
            line = self.query_one(f".m-{stage}", Static)
            bar = self.query_one(f"#bar-{stage}", ProgressBar)
            row = rows.get(stage)
            line.display = bar.display = row is not None
            if row is None:
                continue
            rate = self._rate(run["id"], row) if not row["ended_at"] and run["status"] == "running" else None
            if rate is not None:
                active_rate = rate
            line.update(stage_line(row, rate))
            bar.update(total=max(1, row["total"]), progress=row["done"])
        if active_rate is not None:
            self.rates.append(active_rate * 60)
        spark = self.query_one(Sparkline)
        spark.data = list(self.rates)
        # No stage running: no throughput line (a flat [0] would draw as a full bar).
        spark.display = self.query_one(".m-spark-label").display = bool(self.rates) and active_rate is not None
        cluster = self.query_one(".m-cluster", VerticalScroll)
        cluster.display = bool(snap.workers)
        if snap.workers:
            live = run is not None and run["status"] == "running" and not run["probably_killed"]
            self.query_one(".m-cluster-summary", Static).update(cluster_summary(snap.workers))
            self.query_one(".m-cluster-body", Static).update(cluster_table(snap.workers, snap.now, live))
        self.query_one(".m-events-body", Static).update(events_table(snap))
