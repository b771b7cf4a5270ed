"""Secrets kept out of what we write and print: environment values that look like keys, and typed-in keys.

Keys are read from the environment only (`models.keys.resolve_api_key`), so every secret a run can
know is the value of a variable whose name says so (`*KEY*`, `*TOKEN*`, `*SECRET*`, `*PASSWORD*`).
A user may still type one on the command line (`--teacher ...,api_key=sk-...`, which is refused);
`redact` also masks `api_key=...` pairs and provider-style key shapes (`sk-...`), so that an error
message never echoes it back.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping

MASK = "<redacted>"
MIN_SECRET_LENGTH = 8  # shorter values ("1", "true") would mask ordinary words
SECRET_NAME_RE = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)", re.IGNORECASE)
_TYPED_KEY_RE = re.compile(r"(\bapi[_-]?key\s*[=:]\s*)[^\s,;'\"]+", re.IGNORECASE)
_KEY_SHAPE_RE = re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{8,}")


def secret_values(env: Mapping[str, str] | None = None) -> Iterator[tuple[str, str]]:
    """(name, value) of every environment variable whose name marks it as a secret."""
    env = os.environ if env is None else env
    for name, value in env.items():
        if len(value) >= MIN_SECRET_LENGTH and SECRET_NAME_RE.search(name):
            yield name, value


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """`text` with secret environment values replaced by `$NAME` and typed-in keys masked."""
    for name, value in secret_values(env):
        text = text.replace(value, f"${name}")
    text = _TYPED_KEY_RE.sub(lambda m: m.group(1) + MASK, text)
    return _KEY_SHAPE_RE.sub(MASK, text)
