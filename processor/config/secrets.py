"""Secrets in the config: from an environment variable, a file or the inline value
(that order); the only place the config reads the environment or a file's text.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ModelWrapValidatorHandler,
    SecretStr,
    ValidationInfo,
    model_validator,
)

from processor.config.base import field_problems, load_context


class SecretProblem(Exception):
    """Why the API token could not be resolved; ``field`` is the key to blame."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class _Token:
    """A token, the key it is reported on, and how to name its source in messages."""

    value: str
    field: str
    source: str


@dataclass(frozen=True, slots=True)
class SecretRule:
    """Where a secret may come from and what it must look like."""

    value_key: str  # "token" / "secret"
    file_key: str  # "token_file" / "secret_file"
    env_var: str
    min_length: int
    required: str  # message when enabled and missing


def secret_resolver(rule: SecretRule, enabled: Callable[[Any], bool]) -> Any:
    """A section's wrap validator resolving ``rule``'s secret (see :func:`with_secret`);
    assign it in the class body, e.g. ``_token = secret_resolver(RULE, lambda s: s.enabled)``.
    ``enabled(section)`` says whether the secret is required."""

    def resolve(
        cls: type[BaseModel],
        data: Any,
        handler: ModelWrapValidatorHandler[Any],
        info: ValidationInfo,
    ) -> Any:
        return with_secret(cls, data, handler, info, rule, enabled)

    return model_validator(mode="wrap")(classmethod(resolve))  # type: ignore[arg-type]


def with_secret(
    cls: type[BaseModel],
    data: Any,
    handler: ModelWrapValidatorHandler[Any],
    info: ValidationInfo,
    rule: SecretRule,
    enabled: Callable[[Any], bool],
) -> Any:
    """Body of a section's wrap validator: resolve ``rule``'s secret into the section.

    Outside :func:`parse_config` (a section built in code) the value is taken as given.
    """
    section = handler(data)
    context = load_context(info)
    if context is None:
        return section
    try:
        value = resolve_secret(
            rule,
            getattr(section, rule.value_key),
            getattr(section, rule.file_key),
            enabled(section),
            context.env,
        )
    except SecretProblem as problem:
        raise field_problems(cls.__name__, [(problem.field, problem.message)]) from None
    return section.model_copy(update={rule.value_key: value})


def resolve_secret(
    rule: SecretRule,
    value: SecretStr | None,
    file: str | None,
    enabled: bool,
    env: Mapping[str, str],
) -> SecretStr | None:
    """The secret from env, file or inline value; raises SecretProblem (never with the value)."""
    if value is not None and file is not None:
        raise SecretProblem(
            rule.file_key, f"cannot be combined with {rule.value_key}; set only one"
        )
    token = _pick_secret(rule, value, file, env)
    if token is None or not token.value:
        if enabled:
            raise SecretProblem(rule.value_key, rule.required)
        return None
    problem = _secret_problem(token.value, rule.min_length)
    if problem:
        raise SecretProblem(token.field, f"{token.source} {problem}".lstrip())
    return SecretStr(token.value)


# Marks of the example files' placeholders (deploy/compose/secrets/*.example).
_PLACEHOLDER = re.compile(r"replace[-_ ]?me|change[-_ ]?me", re.IGNORECASE)


def _secret_problem(value: str, min_length: int) -> str:
    """Why ``value`` is not usable as a secret ("" when it is); never quotes the value."""
    if not value.strip():
        return "must not be blank (only whitespace)"
    if value != value.strip():
        return "must not start or end with whitespace (clients would not send it)"
    if len(value) < min_length:
        return f"must be at least {min_length} characters"
    if _PLACEHOLDER.search(value):
        return "is still a placeholder from the examples (REPLACE-ME/CHANGE-ME); set a real secret"
    return ""


def _pick_secret(
    rule: SecretRule, value: SecretStr | None, file: str | None, env: Mapping[str, str]
) -> _Token | None:
    """The environment variable wins, then the file (read now), then the inline value."""
    from_env = env.get(rule.env_var, "").rstrip()
    if from_env:
        return _Token(from_env, rule.value_key, rule.env_var)
    if file is not None:
        try:
            text = Path(file).read_text(encoding="utf-8").rstrip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretProblem(rule.file_key, read_failure(file, exc)) from None
        return _Token(text, rule.file_key, f"the {rule.value_key} in {file}")
    if value is not None:
        return _Token(value.get_secret_value(), rule.value_key, "")
    return None


def read_failure(path: str | os.PathLike[str], exc: OSError | UnicodeDecodeError) -> str:
    """A one-line reason why ``path`` could not be read."""
    if isinstance(exc, UnicodeDecodeError):
        return f"{path} is not valid UTF-8"
    if isinstance(exc, FileNotFoundError):
        return f"file not found: {path}"
    return f"cannot read {path}: {exc.strerror or exc}"
