"""The TUI's settings between sessions: a small TOML file (theme, last tab, sort, key overrides).

Where: `platformdirs.user_config_path("autointerp") / "tui.toml"`, or the path in $AUTOINTERP_TUI_CONFIG (the
tests set it, so they never touch a real home). A file that does not parse is reported once and left as it is:
the session runs on defaults and does not overwrite what the user wrote.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .tabs import TABS

CONFIG_ENV = "AUTOINTERP_TUI_CONFIG"


@dataclass
class Settings:
    theme: str | None = None
    tab: str | None = None
    sort: str | None = None
    descending: bool | None = None
    keys: dict[str, str] = field(default_factory=dict)  # binding id -> keys ("[" or "alt+left,[")


def settings_path() -> Path:
    override = os.environ.get(CONFIG_ENV)
    if override:
        return Path(override)
    import platformdirs  # only when no override: the tests never ask for the real directory

    return platformdirs.user_config_path("autointerp") / "tui.toml"


def load(path: Path) -> tuple[Settings, str | None]:
    """The settings in `path` (defaults when it does not exist) and a one-line warning when it is unusable."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Settings(), None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        return Settings(), f"settings file {path} not read ({e}); using defaults, leaving the file as it is"
    ui, keys = raw.get("ui", {}), raw.get("keys", {})
    if not isinstance(ui, dict) or not isinstance(keys, dict):
        return Settings(), f"settings file {path}: [ui] and [keys] must be tables; using defaults"
    text = lambda name: ui[name] if isinstance(ui.get(name), str) else None  # noqa: E731 - a wrong type is ignored
    return (
        Settings(
            theme=text("theme"),
            tab=text("tab") if text("tab") in TABS else None,
            sort=text("sort"),
            descending=ui["descending"] if isinstance(ui.get("descending"), bool) else None,
            keys={k: v for k, v in keys.items() if isinstance(v, str) and v.strip()},
        ),
        None,
    )


def _toml_string(value: str) -> str:
    # A TOML basic string: JSON's escaping of quotes, backslashes and control characters is valid TOML.
    import json

    return json.dumps(value, ensure_ascii=False)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_string(key)  # a bare key where TOML allows


def dumps(settings: Settings) -> str:
    """A hand writer: tomllib only reads, and two flat tables of strings and a bool need no library."""
    lines = ['# autointerp-tui settings, written on exit; [keys] maps a binding to keys, e.g. back = "["', "[ui]"]
    for name in ("theme", "tab", "sort"):
        value = getattr(settings, name)
        if value is not None:
            lines.append(f"{name} = {_toml_string(value)}")
    if settings.descending is not None:
        lines.append(f"descending = {'true' if settings.descending else 'false'}")
    lines += ["", "[keys]"]
    lines += [f"{_toml_key(k)} = {_toml_string(v)}" for k, v in sorted(settings.keys.items())]
    return "\n".join(lines) + "\n"


def save(path: Path, settings: Settings) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dumps(settings), encoding="utf-8")
    tmp.replace(path)  # a crash mid-write never leaves half a file
