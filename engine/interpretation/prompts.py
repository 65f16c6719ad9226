"""Prompt templates: plain files in prompts/ (or a user folder that overrides them by file name).

A template is a list of chat messages. Lines before the first `=== role ===` header are comments for
the reader. Placeholders use `string.Template` syntax (`$examples`, `${explanation}`; `$$` for a
literal dollar), so JSON braces in few-shot answers need no escaping.
"""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from autointerp.store.errors import UserError

ROLES = ("system", "user", "assistant")
_HEADER = re.compile(r"^=== (system|user|assistant) ===\s*$")


class PromptError(UserError):
    """A template that is missing or malformed, stated in one line."""


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    source: str  # where it was read from
    messages: tuple[tuple[str, str], ...]  # (role, template text)
    sha: str

    def demonstrations(self) -> list[str]:
        """The few-shot answers written into the template (assistant messages)."""
        return [text for role, text in self.messages if role == "assistant"]

    def render(self, **values) -> list[dict]:
        out = []
        for role, text in self.messages:
            try:
                content = string.Template(text).substitute(values)
            except KeyError as e:
                raise PromptError(f"prompt {self.source}: placeholder ${e.args[0]} has no value") from None
            except ValueError as e:
                raise PromptError(f"prompt {self.source}: {e}") from None
            out.append({"role": role, "content": content})
        return out


def parse_template(name: str, text: str, source: str) -> PromptTemplate:
    messages: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        m = _HEADER.match(line)
        if m:
            messages.append((m.group(1), []))
        elif messages:
            messages[-1][1].append(line)
    if not messages:
        raise PromptError(f"prompt {source}: no '=== system|user|assistant ===' section")
    if messages[-1][0] != "user":
        raise PromptError(f"prompt {source}: the last section must be '=== user ==='")
    msgs = tuple((role, "\n".join(lines).strip("\n")) for role, lines in messages)
    return PromptTemplate(name, source, msgs, hashlib.sha256(text.encode()).hexdigest()[:12])


class PromptLibrary:
    """Finds templates by name: `<user_dir>/<name>.txt` first, else the packaged `prompts/<name>.txt`."""

    def __init__(self, user_dir: str | Path | None = None):
        self.user_dir = Path(user_dir).expanduser() if user_dir else None
        if self.user_dir is not None and not self.user_dir.is_dir():
            raise PromptError(f"prompts_dir {self.user_dir} is not a folder")
        self._cache: dict[str, PromptTemplate] = {}

    def get(self, name: str) -> PromptTemplate:
        if name not in self._cache:
            self._cache[name] = self._load(name)
        return self._cache[name]

    def _load(self, name: str) -> PromptTemplate:
        file = f"{name}.txt"
        if self.user_dir is not None and (self.user_dir / file).is_file():
            path = self.user_dir / file
            return parse_template(name, path.read_text(encoding="utf-8"), str(path))
        packaged = resources.files("autointerp.prompts") / file
        if not packaged.is_file():
            raise PromptError(f"no prompt template named {name!r} (looked for {file})")
        return parse_template(name, packaged.read_text(encoding="utf-8"), f"autointerp/prompts/{file}")
