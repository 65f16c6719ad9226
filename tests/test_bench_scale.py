"""`autointerp bench scale` at a tiny size: every stage runs on the synthetic cache and its figures add up."""

import json
import math

from helpers.cli import invoke_cli
from helpers.databases import rows

from autointerp.engine.commands.bench.scale import TARGET_LATENTS, TARGET_TOKENS

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


def test_bench_scale_runs_every_stage_and_extrapolates_from_two_sizes(tmp_path):
    r = invoke_cli(
        "bench", "scale", "--latents", "512", "--tokens", "32768", "--k", "16", "--workdir", tmp_path, "--json"
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out["stages"]) == STAGES
    db = tmp_path / "scale-512x32768.db"
    ((nnz, n_tokens),) = rows(db, "select sum(nnz), sum(n_tokens) from chunks")
    assert out["activations"] == nnz and 0 < nnz <= 16 * n_tokens  # k per token at most, duplicates merged
    assert rows(db, "select count(*) from latents") == [(512,)] and rows(db, "select count(*) from directions") == [
        (512,)
    ]
    assert rows(db, "select count(*) from staged") == [(0,)]  # every chunk compacted into segments
    assert out["stages"]["compaction"]["activations"] == nnz == rows(db, "select sum(n) from segments")[0][0]
    lens, near = out["stages"]["annotate"]["parts"]["logit_lens"], out["stages"]["annotate"]["parts"]["neighbours"]
    assert 0 < lens and 0 < near and lens + near <= out["stages"]["annotate"]["s"]
    # The neighbours run through the HNSW index at both sizes: recall@k against exact ones on a sample, and the
    # index's own growth between the sizes (milliseconds at this size, so noisy: only finite and bounded here).
    assert out["stages"]["annotate"]["neighbours"]["exact"] is False
    assert 0.95 <= out["neighbours_recall_at_k"] <= 1.0
    assert math.isfinite(out["neighbours_growth_exponent"]) and out["neighbours_growth_exponent"] < 4
    assert out["bytes_per_activation"] == round(db.stat().st_size / nnz, 3)  # closed: no write-ahead log left
    assert out["write_activations_per_s"] == round(nnz / out["write_s"])
    for key in ("tui_first_paint_ms", "tui_p95_switch_ms", "tui_sort_ms", "tui_search_ms", "peak_rss_mb"):
        assert math.isfinite(out[key]) and out[key] > 0, key
    # Each stage's extrapolation is its time at the asked size times the scale factor to the power fitted
    # between the two sizes; the headline sums the stages after the write (the TUI is not a batch stage).
    factor = math.sqrt(TARGET_LATENTS / 512 * TARGET_TOKENS / 32768)
    total = 0.0
    for name, fig in out["stages"].items():
        want = fig["s"] * factor ** fig["growth_exponent"]  # the exponent as printed, to 3 decimals
        assert math.isclose(fig["extrapolated_s_1m_100m"], want, rel_tol=0.01, abs_tol=0.1), name
        if name not in ("write", "tui"):
            total += fig["extrapolated_s_1m_100m"]
    assert math.isclose(out["extrapolated_hours_1m_100m"], total / 3600, rel_tol=0.01, abs_tol=0.01)
    assert out["small_size"] == {"latents": 128, "tokens": 8192}
