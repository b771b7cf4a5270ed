"""Teachers' keys and endpoints, without the HTTP client: cheap to import, so that `train_vllm.py` checks a
`--teacher` spec and every key before anything heavy loads.

- `resolve_api_key` reads a key from the environment variable a config entry names (never from a
  file, never logged). A loopback endpoint (a local llama.cpp / vLLM / `transformers serve`) whose key
  variable is unset gets a placeholder key: such servers ignore keys, but the openai client requires
  some string. Any other endpoint with its variable unset or empty is a `MissingApiKeyError`.
- `parse_teacher_spec` turns a command-line `name=...,base_url=...,model=...,api_key_env=...` into a
  `TeacherModelConfig`; its errors never echo what was typed (it may hold a key).
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from alphazero_llm.config import ConfigError, TeacherModelConfig, build
from alphazero_llm.errors import UserError
from alphazero_llm.redact import redact

logger = logging.getLogger(__name__)

LOOPBACK_PLACEHOLDER_KEY = "no-key-needed-on-loopback"


class TeacherError(UserError):
    """Base of the errors the ensemble raises."""


class MissingApiKeyError(TeacherError):
    """The environment variable that should hold a teacher's key is unset or empty."""


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_api_key(teacher: TeacherModelConfig, env: Mapping[str, str] | None = None) -> str:
    """The key for `teacher`, read from the variable it names. Errors name the variable, never a value."""
    env = os.environ if env is None else env
    key = env.get(teacher.api_key_env, "")
    if key:
        return key
    if is_loopback_url(teacher.base_url):
        logger.info(
            "%s is unset; teacher %r is on loopback, using a placeholder key", teacher.api_key_env, teacher.name
        )
        return LOOPBACK_PLACEHOLDER_KEY
    raise MissingApiKeyError(
        f"teacher {teacher.name!r} ({teacher.base_url}) needs an API key: set the environment variable "
        f"{teacher.api_key_env} (keys are read from the environment only)"
    )


_SPEC_FLOATS = ("price_input_per_mtok", "price_output_per_mtok")


def parse_teacher_spec(spec: str) -> TeacherModelConfig:
    """A teacher from `name=N,base_url=URL,model=M,api_key_env=VAR[,provider=P][,price_input_per_mtok=X]...`.

    `provider` (which rate limit applies) defaults to the URL's host. A literal key is refused:
    it would end up in shell history and process listings.
    """
    data: dict[str, object] = {}
    for position, part in enumerate(filter(None, (p.strip() for p in spec.split(","))), start=1):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            # Never echo the spec or the part: a user may have typed a key into it.
            raise ConfigError(f"--teacher: expected key=value pairs separated by commas; part {position} is not one")
        if key.lower().replace("-", "_") == "api_key":
            raise ConfigError("--teacher: give api_key_env=VARIABLE_NAME; keys are read from the environment only")
        if key in data:
            raise ConfigError(f"--teacher: {key} given twice")
        data[key] = value
    for key in _SPEC_FLOATS:
        if key in data:
            try:
                data[key] = float(str(data[key]))
            except ValueError as exc:
                raise ConfigError(f"--teacher: {key}: expected a number, got {redact(str(data[key]))!r}") from exc
    if "provider" not in data and isinstance(data.get("base_url"), str):
        data["provider"] = urlsplit(str(data["base_url"])).hostname or "custom"
    try:
        return build(TeacherModelConfig, data, "--teacher")
    except ConfigError as exc:
        raise ConfigError(redact(str(exc))) from None
