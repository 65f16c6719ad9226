"""engine/interpretation's modules import one way: none imports (at any level: the top, a function, or under
TYPE_CHECKING) a module that imports it back; and its registries name backends, explainers and scorers without
loading a model library."""

from __future__ import annotations

import subprocess
import sys

import grimp

PACKAGE = "autointerp.engine.interpretation"


def test_no_module_of_interpretation_imports_one_that_imports_it_back():
    graph = grimp.build_graph("autointerp.engine", include_external_packages=False)  # every import, wherever it is
    modules = {m for m in graph.modules if m == PACKAGE or m.startswith(PACKAGE + ".")}
    imports = {m: graph.find_modules_directly_imported_by(m) & modules for m in modules}
    cycles = []
    for start in sorted(modules):
        seen, todo = set(), list(imports[start])
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo += imports[m]
        if start in seen:
            cycles.append(start)
    assert cycles == [], f"modules on an import cycle: {cycles}"


def test_the_registries_load_no_model_library():
    code = (
        "import sys\n"
        f"import {PACKAGE}.llm, {PACKAGE}.explainers, {PACKAGE}.scorers\n"
        "from autointerp.engine.config import CHOICES\n"
        "names = [tuple(CHOICES[k]) for k in ('llm.backend', 'explain.explainer', 'score.scorers')]\n"
        "print([m for m in ('torch', 'llama_cpp', 'vllm', 'openai', 'transformers') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
