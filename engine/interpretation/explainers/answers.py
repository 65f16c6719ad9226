"""What an explainer asks back (the answer's JSON schema) and how an answer becomes an explanation."""

from __future__ import annotations

import re

from autointerp.engine.interpretation.llm.base import NOT_JSON, answer_json, never_raises

MAX_EXPLANATION_CHARS = 200
# maxLength makes a grammar-constrained answer close its string instead of running into the token
# budget (a small model rambles; a truncated answer would be a failure).
_EXPLANATION = {"type": "string", "minLength": 1, "maxLength": MAX_EXPLANATION_CHARS}
EXPLANATION_SCHEMA = {"type": "object", "properties": {"explanation": _EXPLANATION}, "required": ["explanation"]}
COT_SCHEMA = {
    "type": "object",
    "properties": {"reasoning": {"type": "string", "maxLength": 600}, "explanation": _EXPLANATION},
    "required": ["reasoning", "explanation"],
}

_FIELD = re.compile(r'"explanation"\s*:\s*"((?:[^"\\]|\\.)*)"', re.S)


@never_raises(lambda why: (None, why))
def parse_explanation(text: str | None) -> tuple[str | None, str | None]:
    """The answer -> (explanation, None) or (None, why it could not be used). Never raises."""
    if not text or not text.strip():
        return None, "empty answer"
    # strict JSON is not asked for: a raw line break inside the string (small models write them) is JSON enough
    obj = answer_json(text)
    if obj is not NOT_JSON:
        value = obj.get("explanation") if isinstance(obj, dict) else None
    else:
        # A chatty answer around the JSON: take a complete explanation field, else the text after an
        # "Explanation:" label (free-text backends); a truncated field is a failure, never guessed.
        m = _FIELD.search(text)
        if m:
            value = answer_json(f'"{m.group(1)}"')
            if value is NOT_JSON:
                return None, "unparseable answer"
        elif '"explanation"' in text:
            return None, "truncated answer"
        else:
            m = re.search(r"explanation\s*:\s*(.+)", text, re.I)
            value = m.group(1).strip().strip('"') if m else None
    if not isinstance(value, str) or not value.strip():
        return None, "no explanation in the answer"
    return " ".join(value.split())[:MAX_EXPLANATION_CHARS], None
