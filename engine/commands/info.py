"""`autointerp info DB`: what a database holds (provenance, how its forward was chosen, cache size, the most
frequent latents, explainers and the latest runs), as aligned lines or one JSON object."""

from __future__ import annotations

import json
import os

import click

from autointerp.store.text import printable


def print_info(db, top: int, as_json: bool) -> None:
    from autointerp.store.db import ActivationStore
    from autointerp.store.overview import dead_latents, explainer_counts, top_latents

    with ActivationStore.open(db, readonly=True) as store:
        prov = store.provenance
        if prov is None:
            if as_json:
                click.echo(json.dumps({"db": str(db), "provenance": None}))
            else:
                click.echo(f"{db}: empty (no activation cache yet)")
            return
        from autointerp.engine.activations.setup import cache_site_problem

        site_problem = cache_site_problem(prov)
        size = os.path.getsize(db)
        nnz = store.nnz()
        conn = store.db.conn
        summary = {
            "db": str(db),
            "provenance": dict(prov),
            "site_problem": site_problem,
            "chunks": len(store.chunks()),
            "tokens": store.n_tokens(),
            "activations": nnz,
            "bytes": size,
            "bytes_per_activation": size / max(nnz, 1),
            "dead_latents": dead_latents(conn),
            "top_latents": top_latents(conn, top),
            "explainers": explainer_counts(conn),
        }
        if as_json:
            click.echo(json.dumps(summary, indent=1))
            return
        p = {k: printable(v) for k, v in prov.items()}  # what a file says is shown, never obeyed
        click.echo(f"model       {p['model']}  ({p['model_hash']})")
        click.echo(f"hook        {p['hook']}")
        forward = p.get("forward_reason") or {"plain": "plain HF forward", "bridge": "TransformerLens bridge"}.get(
            str(p.get("forward")), str(p.get("forward"))
        )
        click.echo(f"forward     {forward}" + (f"; start token {p['start_rule']}" if p.get("start_rule") else ""))
        if site_problem:
            click.echo(f"warning     {printable(site_problem)}")
        click.echo(
            f"coder       {p['coder_kind']} {p['coder_path']}  ({p['coder_hash']}), "
            f"{p['num_latents']} latents, d_in {p['d_in']}"
        )
        click.echo(f"corpus      {p['corpus']}  ({p['corpus_hash']}), seq_len {p['seq_len']}, seed {p['seed']}")
        click.echo(
            f"cached      {summary['chunks']} chunks, {summary['tokens']:,} tokens, {nnz:,} activations, "
            f"{size / 1e6:.1f} MB ({summary['bytes_per_activation']:.2f} bytes/activation)"
        )
        click.echo(f"latents     {summary['dead_latents']} never fired")
        for r in summary["top_latents"]:
            click.echo(
                f"  latent {r['latent']:6d}  count {r['count']:8d}  freq {r['frequency']:.4f}  max {r['max_act']:.2f}"
            )
        for e in summary["explainers"]:
            click.echo(
                f"explainer   {printable(e['explainer'])}: {e['explanations']} explanations ({e['failed']} failed),"
                f" {e['scored']} latents scored"
            )
        print_runs(store)


def print_runs(store, limit: int = 5) -> None:
    """The latest batch runs; a `running` one whose heartbeat stopped was most likely killed."""
    from autointerp.store.runs import run_rows

    for run in run_rows(store.db.conn, limit):
        state = printable(run["status"])
        if run["probably_killed"]:
            state = f"running? (no heartbeat for {run['silent_s']:.0f}s: killed, or on a stalled machine)"
        stages = ", ".join(f"{printable(p['stage'])} {p['done']:,}/{p['total']:,}" for p in run["stages"])
        click.echo(
            f"run {run['id']:<7d} {state}, started {printable(run['started_at'])} on {printable(run['host'])} "
            f"(pid {run['pid']}), latents {printable(run['selection'])}" + (f"; {stages}" if stages else "")
        )
