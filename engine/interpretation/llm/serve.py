"""`python -m autointerp.engine.interpretation.llm.serve --model F ...`: llama.cpp's OpenAI-compatible server (`llama_cpp.server`,
same arguments) with the AMX guard of the in-process backend applied first (see `llamacpp.avoid_amx_crash`).

The tests start it as the real HTTP server on 127.0.0.1; users can serve a GGUF the same way.
"""

from __future__ import annotations

import runpy

from .llamacpp import avoid_amx_crash

if __name__ == "__main__":
    avoid_amx_crash()
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
