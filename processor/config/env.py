"""``${env:VAR}`` expansion in a parsed config, as the OpenTelemetry Collector does it.

Every string value in the YAML (never a key) may reference environment variables:

- ``${env:NAME}`` is replaced by the variable's value; an unset variable is an
  error naming the variable and the key (never a value).
- ``${env:NAME:-default}`` uses ``default`` when the variable is unset or empty;
  a variable set to the empty string expands to the empty string.
- ``$$`` is a literal ``$``; any other ``$`` is kept as written.

When a reference is the *whole* value (``insecure: ${env:INSECURE}``), the result
is an :class:`EnvScalar`: text that each config section types for the key it lands
on (:func:`typed_for`), so a boolean key reads ``true``, an integer key ``4096``,
and a string key keeps ``0123`` exactly, as the Collector does.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from typing import Any

from processor.errors import Problem

_REFERENCE = re.compile(r"\$\$|\$\{([^}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INTEGER = re.compile(r"[-+]?[0-9]+")
_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_BOOLEANS = {"true": True, "false": False, "True": True, "False": False}


class EnvScalar(str):
    """A whole value that came from one environment reference, not yet typed."""

    __slots__ = ()


class _Unresolved(Exception):
    """A reference that cannot be expanded; ``message`` never contains a value."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def expand_env(data: Any, env: Mapping[str, str]) -> tuple[Any, list[Problem]]:
    """``data`` with every reference expanded, and a problem per bad reference."""
    problems: list[Problem] = []
    return _walk(data, env, (), problems), problems


def _walk(
    value: Any, env: Mapping[str, str], path: tuple[str, ...], problems: list[Problem]
) -> Any:
    """Expand strings inside nested mappings and lists; other values unchanged."""
    if isinstance(value, str):
        try:
            return _expand(value, env)
        except _Unresolved as exc:
            problems.append(Problem(".".join(path), exc.message))
            return value
    if isinstance(value, Mapping):
        return {key: _walk(item, env, (*path, str(key)), problems) for key, item in value.items()}
    if isinstance(value, list):
        return [_walk(item, env, (*path, str(i)), problems) for i, item in enumerate(value)]
    return value


def _expand(text: str, env: Mapping[str, str]) -> Any:
    """One string expanded; a whole-value reference is typed like a YAML plain scalar."""
    if "$" not in text:
        return text
    whole = _REFERENCE.fullmatch(text)
    if whole is not None and whole.group(1) is not None:
        return EnvScalar(_lookup(whole.group(1), env))
    return _REFERENCE.sub(lambda match: _replacement(match, env), text)


def _replacement(match: re.Match[str], env: Mapping[str, str]) -> str:
    """The text that replaces one ``$$`` or ``${...}`` inside a longer string."""
    body = match.group(1)
    return "$" if body is None else _lookup(body, env)


def _lookup(body: str, env: Mapping[str, str]) -> str:
    """The value for ``env:NAME`` or ``env:NAME:-default``."""
    provider, colon, rest = body.partition(":")
    if not colon or provider != "env":
        raise _Unresolved(
            f"${{{body}}} is not supported; use ${{env:NAME}} or ${{env:NAME:-default}}"
            " (write $$ for a literal $)"
        )
    name, separator, default = rest.partition(":-")
    if not _NAME.fullmatch(name):
        raise _Unresolved(f"${{env:{name}}}: {name!r} is not an environment variable name")
    value = env.get(name)
    if separator and not value:
        return default
    if value is None:
        raise _Unresolved(
            f"environment variable {name} is not set (use ${{env:{name}:-default}} for a default)"
        )
    return value


def typed_for(annotation: Any, text: EnvScalar) -> Any:
    """``text`` as the scalar type a field declares (bool, int, float), else a plain str.

    Text that does not read as the declared type is passed on as a string, so the
    field's own validator reports it the way it reports a bad YAML value.
    """
    kinds = _scalar_kinds(annotation)
    if bool in kinds and text in _BOOLEANS:
        return _BOOLEANS[text]
    if int in kinds and _INTEGER.fullmatch(text):
        return int(text)
    if float in kinds and _FLOAT.fullmatch(text):
        return float(text)
    return str(text)


def _scalar_kinds(annotation: Any) -> set[type]:
    """The bool/int/float types among ``annotation`` and the members of its union."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return set().union(*(_scalar_kinds(member) for member in typing.get_args(annotation)))
    return {annotation} & {bool, int, float}
