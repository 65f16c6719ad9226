"""`autointerp bench scale` at a tiny size: every stage runs on the synthetic cache and its figures add up."""

import json
import math

from helpers.cli import invoke_cli
from helpers.databases import rows

from autointerp.engine.commands.bench.scale import TARGET_LATENTS, TARGET_TOKENS, format_figures

STAGES = {
    "write",
    "compaction",
    "statistics",
    "filters",
    "annotate",
    "sampling",
    "coactivation",
    "controls",
    "plan_all_latents",
    "report",
    "export_json",
    "export_delphi",
    "tui",
}


def test_bench_scale_runs_every_stage_and_extrapolates_from_three_sizes(tmp_path):
    r = invoke_cli(
        "bench", "scale", "--latents", "256", "--tokens", "16384", "--k", "16", "--workdir", tmp_path, "--json"
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out["stages"]) == STAGES
    db = tmp_path / "scale-256x16384.db"
    ((nnz, n_tokens),) = rows(db, "select sum(nnz), sum(n_tokens) from chunks")
    assert out["activations"] == nnz and 0 < nnz <= 16 * n_tokens  # k per token at most, duplicates merged
    assert rows(db, "select count(*) from latents") == [(256,)] and rows(db, "select count(*) from directions") == [
        (256,)
    ]
    assert rows(db, "select count(*) from staged") == [(0,)]  # every chunk compacted into segments
    assert out["stages"]["compaction"]["activations"] == nnz == rows(db, "select sum(n) from segments")[0][0]
    lens, near = out["stages"]["annotate"]["parts"]["logit_lens"], out["stages"]["annotate"]["parts"]["neighbours"]
    assert 0 < lens and 0 < near and lens + near <= out["stages"]["annotate"]["s"]
    # The neighbours run through the index at every size: recall@k against exact ones on a sample, and the index's
    # own growth in latents (milliseconds at this size, so noisy: only finite and bounded here).
    assert out["stages"]["annotate"]["neighbours"]["exact"] is False
    assert 0.95 <= out["neighbours_recall_at_k"] <= 1.0
    growth = out["stages"]["annotate"]["parts_growth"]
    assert out["neighbours_growth_exponent"] == growth["neighbours"]["p_latents"]
    assert math.isfinite(out["neighbours_growth_exponent"]) and out["neighbours_growth_exponent"] < 4
    assert out["bytes_per_activation"] == round(db.stat().st_size / nnz, 3)  # closed: no write-ahead log left
    assert out["write_activations_per_s"] == round(nnz / out["write_s"])
    for key in ("tui_first_paint_ms", "tui_p95_switch_ms", "tui_sort_ms", "tui_search_ms", "peak_rss_mb"):
        assert math.isfinite(out[key]) and out[key] > 0, key
    # Three sizes: small (a quarter of both), wide (all the latents, a quarter of the tokens), the asked one.
    assert out["sizes"] == {
        "small": {"latents": 64, "tokens": 4096},
        "wide": {"latents": 256, "tokens": 4096},
        "asked": {"latents": 256, "tokens": 16384},
    }
    assert (tmp_path / "scale-64x4096.db").exists() and (tmp_path / "scale-256x4096.db").exists()
    # Each stage's exponents, one per axis, are those of its own seconds at the three sizes (latents: small ->
    # wide, x4; tokens: wide -> asked, x4), and its extrapolation is its time at the asked size grown by each.
    f_latents, f_tokens = TARGET_LATENTS / 256, TARGET_TOKENS / 16384

    def check(where: str, s_small: float, s_wide: float, s: float, g: dict) -> float:
        assert math.isclose(g["p_latents"], math.log(max(s_wide, 1e-3) / max(s_small, 1e-3), 4), abs_tol=2e-3), where
        assert math.isclose(g["p_tokens"], math.log(max(s, 1e-3) / max(s_wide, 1e-3), 4), abs_tol=2e-3), where
        # The exponents as printed (3 decimals), one below 0 (load noise between sizes) read as 0.
        want = s * f_latents ** max(g["p_latents"], 0) * f_tokens ** max(g["p_tokens"], 0)
        assert math.isclose(g["extrapolated_s_1m_100m"], want, rel_tol=0.01, abs_tol=0.1), where
        return g["extrapolated_s_1m_100m"]

    total = 0.0
    for name, fig in out["stages"].items():
        assert fig["s"] >= 0 and fig["s_small"] >= 0 and fig["s_wide"] >= 0, name
        if "parts" in fig:  # annotate: each part (and the rest) at its own exponents; the stage is their sum
            growth = fig["parts_growth"]
            assert set(growth) == {"logit_lens", "neighbours", "rest"}
            parts = [check(f"{name}.{p}", g["s_small"], g["s_wide"], g["s"], g) for p, g in growth.items()]
            assert math.isclose(sum(g["s"] for g in growth.values()), fig["s"], abs_tol=0.01)
            assert math.isclose(fig["extrapolated_s_1m_100m"], sum(parts), abs_tol=0.2)
        else:
            check(name, fig["s_small"], fig["s_wide"], fig["s"], fig)
        if name not in ("write", "tui"):
            total += fig["extrapolated_s_1m_100m"]
    assert math.isclose(out["extrapolated_hours_1m_100m"], total / 3600, rel_tol=0.01, abs_tol=0.01)
    # The text output: a table with both exponents, the annotate stage's parts indented under it.
    text = format_figures(out)
    assert "p_latents" in text and "p_tokens" in text and "\n  neighbours " in text and "\n  rest " in text
