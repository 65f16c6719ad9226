"""The app's tabs, in the order shown: name -> (module, class), in the style of vLLM's model registry.

A tab's module is imported only when the app composes it (importlib), never when the app module is imported.
Adding a tab is one module with an `AppTab` subclass (tui/tab.py) and one line here: its key is its place in this
table (1, 2, ...), its binding id (`[keys]` in the settings file) and its palette name come with it. The keys
are the app's bindings, made from this table when tui/app.py is imported. "latents" is the one tab the app itself
relies on: its keys (sort, search, back, ...) act on that tab from every tab.
"""

from __future__ import annotations

import importlib

from textual.binding import Binding

from .tab import AppTab

TABS: dict[str, tuple[str, str]] = {
    "monitor": ("autointerp.tui.monitor_tab", "MonitorTab"),
    "latents": ("autointerp.tui.latents_tab", "LatentsTab"),
    "audit": ("autointerp.tui.audit_tab", "AuditTab"),
    "plots": ("autointerp.tui.plots_tab", "PlotsTab"),
    "probe": ("autointerp.tui.probe_tab", "ProbeTab"),
}


def tab_class(name: str) -> type[AppTab]:
    module, cls = TABS[name]
    tab = getattr(importlib.import_module(module), cls)
    if not (isinstance(tab, type) and issubclass(tab, AppTab)):
        raise TypeError(f"tab {name!r}: {module}.{cls} is not an AppTab")
    return tab


def tab_bindings() -> list[Binding]:
    """One key per tab, `1` for the first: the app's bindings, read from the table when the app class is made."""
    return [Binding(str(key), f"tab('{name}')", name, id=name) for key, name in enumerate(TABS, 1)]
