"""The Probe tab: test your own text on the latent in view. Type a sentence, enter: its tokens heat-mapped by the
latent's activation, and the 10 latents firing most on it (enter on one goes to it in the browser); `k` keeps the
sentence as evidence on the latent's audit (store/audits.py, shown in the Audit tab).

The model runs in a worker process (tui/probe_client.py), started on the first sentence and stopped when the app
exits; requests go to it from worker threads, whose answers come back as messages: the UI never waits on it."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from autointerp.store.audits import write_probe
from autointerp.store.text import printable

from .heatmap import heat_text, legend
from .probe_client import ProbeClient, ProbeUnavailable
from .readers import in_worker
from .tab import AppTab, later

TOP = 10


class ProbeAnswered(Message, bubble=False):
    """The worker process's answer to request `number` (error: why there is none)."""

    def __init__(self, number: int, latent: int | None, answer: dict | None, error: str | None = None) -> None:
        super().__init__()
        self.number, self.latent, self.answer, self.error = number, latent, answer, error


class ProbePane(Vertical):
    BINDINGS = [
        Binding("k", "keep", "keep on audit"),
        Binding("escape", "leave_input", "to the list", show=False),
    ]
    DEFAULT_CSS = """
    ProbePane { padding: 0 1; }
    ProbePane .p-head, ProbePane .p-status { height: auto; }
    ProbePane .p-heat { height: auto; min-height: 3; border: round $panel-lighten-2; padding: 0 1; }
    ProbePane #probe-top { height: 1fr; min-height: 6; border: round $panel-lighten-2; }
    ProbePane #probe-top:focus { border: round $accent; }
    """

    def __init__(self, mono: bool, **kw) -> None:
        super().__init__(**kw)
        self.mono = mono
        self.latent: int | None = None  # the latent the heat map shows
        self.answer: dict | None = None  # the last answer shown (what `k` keeps)
        self.answer_latent: int | None = None

    def compose(self) -> ComposeResult:
        yield Static("", classes="p-head")
        yield Input(placeholder="type a sentence, enter probes it", id="probe-input")
        yield Static("", classes="p-heat")
        yield Static(Text("no sentence probed yet", "dim"), classes="p-status")
        yield OptionList(id="probe-top")

    def on_mount(self) -> None:
        self.post_message(ProbeTab.PaneMounted())

    def action_leave_input(self) -> None:
        self.query_one("#probe-top", OptionList).focus()

    def action_keep(self) -> None:
        tab = self.ancestor_tab()
        if tab is not None:
            tab.keep()

    def ancestor_tab(self) -> ProbeTab | None:
        for node in self.ancestors:
            if isinstance(node, ProbeTab):
                return node
        return None

    def show_head(self, latent: int | None, explanation: str | None, rater: str) -> None:
        head = Text()
        if latent is None:
            head.append("no latent in view: pick one in the Latents tab", "dim")
        else:
            head.append(f"probe latent {latent}", "bold")
            head.append(f": {printable(explanation)}" if explanation else " (not explained)")
        head.append(
            f"\nenter probes · escape/tab to the top latents (enter goes to one) · k keeps it on the audit as {printable(rater)}",
            "dim",
        )
        self.query_one(".p-head", Static).update(head)

    def show_pending(self, what: str) -> None:
        self.query_one(".p-status", Static).update(Text(what, "italic"))

    def show_answer(self, answer: dict, latent: int | None) -> None:
        self.answer, self.answer_latent = answer, latent
        tokens = answer["tokens"]
        chosen = answer["latents"][0] if answer["latents"] else None
        if chosen is not None:
            acts = chosen["activations"]
            scale = chosen["latent_max"] or chosen["max"]
            heat = heat_text(tokens, acts, scale, self.mono)
            heat.append("\n")
            heat.append_text(legend(self.mono))
            share = (
                f" ({chosen['max'] / chosen['latent_max']:.0%} of its max over the cache)"
                if chosen["latent_max"]
                else ""
            )
            status = f"{len(tokens)} tokens · latent {chosen['latent']}: max {chosen['max']:.3f}{share}"
        else:
            heat = Text(" ".join(printable(t) for t in tokens))
            status = f"{len(tokens)} tokens"
        if answer.get("truncated"):
            status += " · cut to its first tokens"
        status += f" · {answer.get('ms', 0):.0f} ms"
        self.query_one(".p-heat", Static).update(heat)
        self.query_one(".p-status", Static).update(Text(status))
        top = self.query_one("#probe-top", OptionList)
        top.clear_options()
        if not answer["top"]:
            top.add_option(Option(Text("no latent fires on this text", "dim"), disabled=True))
        for r in answer["top"]:
            line = Text(f"{r['latent']:>7}  {r['max']:8.3f}  ")
            line.append(repr(r["token"]), "dim")
            line.append(f"  {printable(r['explanation'])}" if r["explanation"] else "  (not explained)")
            top.add_option(Option(line, id=str(r["latent"])))
        top.border_title = f"top {len(answer['top'])} latents on this text (enter: go to it)"
        if answer["top"]:
            top.highlighted = 0

    def show_error(self, error: str) -> None:
        self.query_one(".p-status", Static).update(Text(f"probe: {printable(error)}", "bold red"))


class ProbeTab(AppTab):
    TITLE = "Probe"
    PALETTE = "test your own text on the latent in view"

    class PaneMounted(Message):
        """The (lazily mounted) pane is on screen."""

    def __init__(self, name: str, key: int, first: bool) -> None:
        super().__init__(name, key, first)
        self.client: ProbeClient | None = None  # made on the first sentence; its process starts then
        self.requests = 0  # numbered: an answer to an older request than the newest is not shown
        self.text = ""  # the sentence probed last
        self.answers = 0  # answers shown (tests wait for it)
        self.kept = 0

    def compose(self) -> ComposeResult:
        yield later(ProbePane(self.host.mono), now=False)

    @property
    def pane(self) -> ProbePane | None:
        panes = self.query(ProbePane)
        return panes.first() if panes else None

    def focus_content(self) -> None:
        pane = self.pane
        if pane is not None:
            pane.query_one("#probe-input", Input).focus()

    def shown(self) -> None:
        self.follow()

    def on_probe_tab_pane_mounted(self, message: PaneMounted) -> None:
        self.follow()
        if self.active:
            self.focus_content()

    def follow(self) -> None:
        """Show the latent in view; probe the last sentence again when it changed."""
        pane = self.pane
        if pane is None:
            return
        latent = self.host.latents.latent_in_view()
        explanation = None
        if latent is not None:
            explanation = self.host.browser.explanation_text(latent, self.host.latents.explainer)
        pane.show_head(latent, explanation, self.host.rater)
        changed = latent != pane.latent
        pane.latent = latent
        if changed and self.text:
            self.probe(self.text)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "probe-input":
            return
        event.stop()
        if event.value.strip():
            self.probe(event.value)

    def probe(self, text: str) -> None:
        pane = self.pane
        if pane is None:
            return
        self.text = text
        self.requests += 1
        number, latent, explainer = self.requests, pane.latent, self.host.latents.explainer
        if self.client is None:
            self.client = ProbeClient(self.host.db_path)
        client = self.client
        pane.show_pending("probing…" if client.info is not None else "starting the model (first sentence: seconds)…")

        def ask() -> ProbeAnswered | None:
            if number != self.requests:
                return None  # a newer sentence was typed while this one waited
            try:
                answer = client.ask(text, latent, TOP, explainer)
            except ProbeUnavailable as e:
                return ProbeAnswered(number, latent, None, str(e))
            except Exception as e:  # the pipes closed under it as the app stops, a garbled line: said, never raised
                return ProbeAnswered(number, latent, None, f"{type(e).__name__}: {e}")
            if "error" in answer:
                return ProbeAnswered(number, latent, None, answer["error"])
            return ProbeAnswered(number, latent, answer)

        in_worker(self, ask, group="probe")

    def on_probe_answered(self, message: ProbeAnswered) -> None:
        pane = self.pane
        if not self.app.is_running or pane is None or message.number != self.requests:
            return
        if message.answer is None:
            pane.show_error(message.error or "no answer")
            return
        pane.show_answer(message.answer, message.latent)
        self.answers += 1

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option_list.id == "probe-top" and event.option.id is not None:
            event.stop()
            self.host.jump(int(event.option.id))

    def keep(self) -> None:
        pane = self.pane
        answer = pane.answer if pane is not None else None
        if pane is None or answer is None or not answer["latents"]:
            self.app.notify("nothing to keep: probe a sentence on a latent first", severity="warning")
            return
        chosen = answer["latents"][0]
        explainer = self.host.latents.explainer
        try:
            write_probe(
                self.host.db_path,
                chosen["latent"],
                explainer,
                answer["text"],
                answer["tokens"],
                chosen["activations"],
                rater=self.host.rater,
            )
        except Exception as e:  # a locked or read-only file: said, never a traceback over the UI
            self.app.notify(f"could not keep it: {type(e).__name__}: {e}", severity="error")
            return
        self.kept += 1
        self.app.notify(f"kept on latent {chosen['latent']}'s audit")

    def stop_worker_process(self) -> None:
        if self.client is not None:
            self.client.close()

    def on_unmount(self) -> None:
        self.stop_worker_process()
