"""`autointerp probe DB "text"`: test your own text on a cache's model and coder. Each token with its activation for
the chosen latents, or the latents that fire most on the text; `--serve` answers one JSON request per stdin line
(the TUI's probe tab runs it as its worker process, loading the model once).

The model, hook, coder and forward come from the database's provenance, as for `annotate` and the generation
scorer; the corpus is not needed. Everything about the input (the text, the latents, the file and its cache) is
checked read-only before the model loads."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
from typing import TextIO

import click

from autointerp.engine.config import CHOICES
from autointerp.store.db import ActivationStore, StoreError, preflight
from autointerp.store.errors import UserError, say
from autointerp.store.text import printable

from .wiring import status, stdout_console, user_errors

MAX_LATENTS = 1024  # --latents: per-token columns printed or sent


class ProbeError(UserError):
    """A probe request that cannot be answered, stated in one line."""


def parse_latents(spec: str | None) -> list[int]:
    """--latents: latent ids and ranges (0-9,42); [] when not given."""
    from autointerp.engine.interpretation.selection import parse_selection

    if spec is None:
        return []
    sel = parse_selection(spec)
    if sel.kind != "ids" or sel.exclude or not sel.ids:
        raise ProbeError(f"--latents {spec!r}: give latent ids or ranges, e.g. 0-9,42")
    if len(sel.ids) > MAX_LATENTS:
        raise ProbeError(f"--latents {spec!r}: {len(sel.ids):,} latents; at most {MAX_LATENTS:,} per probe")
    return list(sel.ids)


def check_text(text: str | None) -> str:
    if text is None or not text.strip():
        raise ProbeError("the text is empty: give a sentence to probe")
    return text


def read_cache(db: str) -> dict:
    """The provenance of a database that holds a cache (read-only; a missing or damaged file is one line)."""
    from autointerp.engine.activations.identity import refuse_wrong_site

    preflight(db, must_exist=True, writing=False)
    with ActivationStore.open(db, readonly=True) as store:
        prov = store.provenance
        if prov is None:
            raise StoreError(f"{db} holds no activation cache yet: run `autointerp cache` first")
        refuse_wrong_site(store)
        return dict(prov)


def check_latents(latents: list[int], num_latents: int) -> None:
    for latent in latents:
        if not 0 <= latent < num_latents:
            raise ProbeError(f"latent {latent} does not exist (this cache's latents run from 0 to {num_latents - 1})")


class ProbeSession:
    """A database's model and coder, loaded once, and its read-only store for the latents' maxima and explanations."""

    def __init__(self, db: str, model=None):
        from autointerp.engine.activations.model import SubjectModel
        from autointerp.engine.activations.probe import LatentProbe
        from autointerp.engine.activations.setup import load_configured_coder, settle_hub_coder
        from autointerp.engine.config import CacheConfig

        prov = read_cache(db)
        self.db, self.num_latents = db, int(prov["num_latents"])
        cfg = dataclasses.replace(CacheConfig(**json.loads(prov["config"])), device="auto")
        settle_hub_coder(cfg)
        if model is None:
            model = SubjectModel.load(cfg.model, cfg.device, cfg.dtype)
        coder = load_configured_coder(cfg, model)
        coder.to(model.device)
        self.store = ActivationStore.open(db, readonly=True)
        try:  # the same model, hook and coder the cache was made with, or one line saying which differs
            self.store.check_claim({"model": model.name, "coder_kind": coder.kind, "coder_hash": coder.content_hash})
        except Exception:
            self.store.close()
            raise
        self.probe = LatentProbe.for_cache(model, coder, prov)

    def close(self) -> None:
        self.store.close()

    def warm_up(self) -> None:
        """Serve one sentence a little faster: one thread on a CPU (a sentence is too small to share out; two
        threads spin against the TUI and other work on a small machine: 0.5-1 s against 0.15 s per sentence,
        measured on 2 busy cores), and the forward decided now rather than on the first sentence."""
        import torch

        if self.probe.model.device.type == "cpu":
            torch.set_num_threads(1)
        self.probe.encode_ids([self.probe.model.sep_id])

    def _about(self, latent: int, explainer: str) -> dict:
        stats = self.store.latent_stats(latent) or {}
        row = self.store.results.explanation(latent, explainer) or {}
        return {"latent_max": stats.get("max_act"), "explanation": row.get("text")}

    def run(self, text: str, latents: list[int], top: int = 10, explainer: str = "default") -> dict:
        """The probe of one text: its tokens, each chosen latent's activation per token, the `top` latents by max."""
        check_text(text)
        check_latents(latents, self.num_latents)
        enc = self.probe.encode_text(text)
        if not enc.ids:
            raise ProbeError("the text has no tokens")
        tokens = self.probe.token_strings(enc.ids)
        chosen = []
        for latent in latents:
            acts = enc.of(latent)
            chosen.append(
                {
                    "latent": latent,
                    "activations": [float(v) for v in acts],
                    "max": float(acts.max()),
                    **self._about(latent, explainer),
                }
            )
        ranked = [
            {"latent": latent, "max": value, "position": pos, "token": tokens[pos], **self._about(latent, explainer)}
            for latent, value, pos in enc.top(top)
        ]
        return {
            "text": text,
            "tokens": tokens,
            "token_ids": enc.ids,
            "truncated": enc.truncated,
            "latents": chosen,
            "top": ranked,
        }

    def answer(self, line: str, top: int, explainer: str) -> dict:
        """One --serve request ({"text", "latent"?, "top"?, "explainer"?}) -> its answer, or {"error": ...}."""
        t0 = time.perf_counter()
        try:
            req = json.loads(line)
            if not isinstance(req, dict) or not isinstance(req.get("text"), str):
                raise ProbeError('a request is one JSON object per line: {"text": "...", "latent": N}')
            latent = req.get("latent")
            if latent is not None and (not isinstance(latent, int) or isinstance(latent, bool)):
                raise ProbeError(f"latent {latent!r} is not a latent id")
            n = req.get("top", top)
            if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= 1000:
                raise ProbeError(f"top {n!r}: give a whole number from 0 to 1000")
            name = req.get("explainer", explainer)
            out = self.run(req["text"], [] if latent is None else [latent], n, str(name))
        except json.JSONDecodeError as e:
            return {"error": f"not JSON ({e})"}
        except UserError as e:
            return {"error": str(e)}
        except (
            RuntimeError,
            ValueError,
            MemoryError,
        ) as e:  # one request's fault (torch, the tokenizer): said; serving goes on
            return {"error": f"{type(e).__name__}: {e}"}
        out["ms"] = round((time.perf_counter() - t0) * 1000, 1)
        return out


def serve(session: ProbeSession, lines: TextIO, out: TextIO, top: int, explainer: str) -> None:
    """Answer each request line with one JSON line, until stdin closes (the TUI quits or dies)."""
    ready = {"ready": True, "num_latents": session.num_latents, "hook": session.probe.hook}
    out.write(json.dumps(ready) + "\n")
    out.flush()
    for line in lines:
        if not line.strip():
            continue
        out.write(json.dumps(session.answer(line, top, explainer)) + "\n")
        out.flush()


def print_probe(result: dict, top: int) -> None:
    from rich.table import Table
    from rich.text import Text

    console = stdout_console()
    tokens = result["tokens"]
    console.print(Text(f"{len(tokens)} tokens" + (" (the text was cut there)" if result["truncated"] else "")))
    if result["latents"]:
        table = Table(box=None, header_style="bold", pad_edge=False)
        table.add_column("#", justify="right")
        table.add_column("token")
        for c in result["latents"]:
            table.add_column(f"latent {c['latent']}", justify="right")
        for i, tok in enumerate(tokens):
            table.add_row(str(i), Text(repr(tok)), *(f"{c['activations'][i]:.3f}" for c in result["latents"]))
        table.add_row("", Text("max", "bold"), *(f"{c['max']:.3f}" for c in result["latents"]))
        console.print(table)
    table = Table(
        box=None, header_style="bold", pad_edge=False, title=f"top {top} latents on this text", title_justify="left"
    )
    for col in ("latent", "max", "of its cache max"):
        table.add_column(col, justify="right")
    table.add_column("at token")
    table.add_column("explanation")
    for r in result["top"]:
        share = f"{r['max'] / r['latent_max']:.0%}" if r["latent_max"] else "-"
        where = Text(f"{r['position']} {r['token']!r}")
        table.add_row(str(r["latent"]), f"{r['max']:.3f}", share, where, Text(printable(r["explanation"] or "")))
    if top == 0:
        return
    if not result["top"]:
        console.print(Text("no latent fires on this text", "dim"))
    else:
        console.print(table)


@click.command()
@click.argument("db", type=click.Path(dir_okay=False))
@click.argument("text", required=False)
@click.option("--latents", "spec", help="Latent ids (0-9,42): each token's activation for these.")
@click.option("--top", type=click.IntRange(min=0, max=1000), default=10, show_default=True, help="Top latents listed.")
@click.option(
    "--explainer",
    type=click.Choice(list(CHOICES["explain.explainer"])),
    default="default",
    show_default=True,
    help="Whose explanations are shown beside the latents.",
)
@click.option(
    "--serve",
    is_flag=True,
    help='Read one JSON request per stdin line ({"text": ..., "latent": N}) and answer each with one JSON line '
    "(tokens, the latent's activations, the top latents); the model loads once. The TUI's probe tab runs this.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@user_errors
def probe(db, text, spec, top, explainer, serve, as_json) -> None:
    """Test your own text: each token with its activation for --latents, or the latents firing most on TEXT. The
    model and coder are the ones the database's cache was made with."""
    if serve and (text is not None or spec is not None):
        raise ProbeError("--serve reads its texts and latents from stdin: give no TEXT or --latents with it")
    latents = parse_latents(spec)
    if not serve:
        check_text(text)
    prov = read_cache(db)
    check_latents(latents, int(prov["num_latents"]))
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the answer (a library's print goes aside)
        if serve:
            session = ProbeSession(db)
            session.warm_up()
        else:
            with status(f"loading the model and coder {db} was made with ..."):
                session = ProbeSession(db)
    try:
        if serve:
            serve_stdin(session, top, explainer)
            return
        result = session.run(text, latents, top, explainer)
    finally:
        session.close()
    if result["truncated"]:
        say("warning", f"the text is longer than {len(result['tokens'])} tokens: only its start was probed")
    if as_json:
        click.echo(json.dumps({"db": db, **result}, sort_keys=True))
    else:
        print_probe(result, top)


def serve_stdin(session: ProbeSession, top: int, explainer: str) -> None:
    try:
        serve(session, sys.stdin, sys.stdout, top, explainer)
    except (BrokenPipeError, KeyboardInterrupt):  # the TUI went away mid-answer: nothing left to answer
        pass
