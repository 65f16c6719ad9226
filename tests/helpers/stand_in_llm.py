"""A stand-in explainer/judge for the tests whose subject is the pipeline, not the answers: a GGUF that llama.cpp
runs for real, with the embedded SmolLM2's tokenizer and chat template, and small random weights.

Why: the resume, fault, kill and storage tests run whole batches many times, and on one core the embedded
135M model reads a prompt at ~100-150 tokens/s (a 1,200-token explanation prompt: 14 s cold), so the LLM was most
of their time while nothing they assert depends on what it answers. This model reads the same prompt ~80 times
faster through the same code: the real llama.cpp backend, its grammar-constrained JSON answers, KV-cache reuse,
logprobs and token accounting. Its answers are fluent nonsense (" confused confused ...") that parse; a grammar
forces every scorer's answer into shape, as with any model. The tests about the embedded default's own answers
(test_interpret_real.py, the planted-latent recoveries, surprisal, simulation) keep the real 135M model.

The file is written once per machine, atomically, under the temporary folder: ~8 MB, under a second to build.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

# Bump when the weights or shape change, so an old file is never reused.
VERSION = 1
WIDTH, LAYERS, HEADS, FFN = 64, 2, 2, 128


def stand_in_gguf() -> Path:
    """The stand-in model's path, written first if this machine has none yet."""
    from autointerp.engine.defaults import smollm2_gguf

    source = smollm2_gguf()
    path = Path(tempfile.gettempdir()) / f"autointerp-stand-in-llm-v{VERSION}-{source.stat().st_size}.gguf"
    if not path.exists():
        part = path.with_name(f"{path.name}.{os.getpid()}.part")
        write(source, part)
        os.replace(part, path)  # two workers building at once each rename a whole, identical file
    return path


def with_stand_in(extra: str = "", model: Path | str | None = None) -> str:
    """Config text `extra` with `llm.model` set to `model` (the stand-in unless named), unless `extra` names a
    model of its own. Goes into an `[llm]` table `extra` opens (TOML opens a table once), else a new one."""
    if "\nmodel =" in "\n" + extra.partition("[llm]\n")[2].split("\n[")[0]:
        return extra
    line = f"model = {json.dumps(str(model or stand_in_gguf()))}\n"
    return extra.replace("[llm]\n", "[llm]\n" + line, 1) if "[llm]\n" in extra else extra + "\n[llm]\n" + line


def write(source: Path, out: Path, seed: int = 0) -> None:
    import gguf

    reader = gguf.GGUFReader(str(source))
    writer = gguf.GGUFWriter(str(out), "llama")
    u32 = gguf.GGUFValueType.UINT32
    shape = {
        "llama.block_count": LAYERS,
        "llama.embedding_length": WIDTH,
        "llama.feed_forward_length": FFN,
        "llama.attention.head_count": HEADS,
        "llama.attention.head_count_kv": HEADS,
        "llama.rope.dimension_count": WIDTH // HEADS,
        "general.file_type": 0,  # all float32/float16
    }
    for key, field in reader.fields.items():  # the tokenizer, chat template, context length, rope base, ...
        if key.startswith("GGUF.") or key == "general.architecture" or key in shape:
            continue
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, field.contents(), kind, sub_type=field.types[-1])
        else:
            writer.add_key_value(key, field.contents(), kind)
    for key, value in shape.items():
        writer.add_key_value(key, value, u32)

    rng = np.random.default_rng(seed)
    vocab = int(reader.fields["llama.vocab_size"].contents())

    def dense(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * 0.5 / np.sqrt(cols)).astype(np.float32)

    writer.add_tensor("token_embd.weight", rng.standard_normal((vocab, WIDTH)).astype(np.float16))  # tied output
    writer.add_tensor("output_norm.weight", np.ones(WIDTH, np.float32))
    for i in range(LAYERS):
        block = f"blk.{i}."
        writer.add_tensor(block + "attn_norm.weight", np.ones(WIDTH, np.float32))
        writer.add_tensor(block + "ffn_norm.weight", np.ones(WIDTH, np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{block}{name}.weight", dense(WIDTH, WIDTH))
        writer.add_tensor(block + "ffn_gate.weight", dense(FFN, WIDTH))
        writer.add_tensor(block + "ffn_up.weight", dense(FFN, WIDTH))
        writer.add_tensor(block + "ffn_down.weight", dense(WIDTH, FFN))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
