"""Loading a config file: YAML with unique keys, ``${env:...}`` expansion, validation
against the assembled model, and pydantic's errors turned into short Problems."""

from __future__ import annotations

import os
import re
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from yaml.constructor import ConstructorError

from processor.config.base import LoadContext
from processor.config.env import expand_env
from processor.config.secrets import read_failure
from processor.errors import ConfigError, Problem

__all__ = ["load", "validate"]

Model = TypeVar("Model", bound=BaseModel)


def load(model: type[Model], path: str | os.PathLike[str], env: Mapping[str, str] | None) -> Model:
    """Read, parse and validate a YAML config file; raises ConfigError listing every problem."""
    file = Path(path)
    data = _read_yaml(file)
    if not isinstance(data, Mapping):
        kind = "empty" if data is None else f"a {type(data).__name__}, not a mapping"
        raise ConfigError([Problem("", f"config file {file} is {kind}")])
    return validate(
        model, data, base_dir=file.absolute().parent, env=os.environ if env is None else env
    )


def validate(
    model: type[Model], data: Mapping[str, Any], *, base_dir: Path, env: Mapping[str, str]
) -> Model:
    """Validate already-parsed YAML; relative paths are resolved against ``base_dir``.

    ``${env:VAR}`` references in values are expanded from ``env`` first
    (see :mod:`processor.config.env`).
    """
    if not isinstance(data, Mapping):
        raise ConfigError([Problem("", "the top level of the config must be a mapping")])
    expanded, unresolved = expand_env(data, env)
    if unresolved:
        raise ConfigError(unresolved)
    try:
        return model.model_validate(
            _with_sections(model, expanded), context=LoadContext(base_dir=base_dir, env=env)
        )
    except ValidationError as exc:
        problems = [_to_problem(error) for error in exc.errors(include_input=False)]
    raise ConfigError(problems)


def _with_sections(model: type[BaseModel], data: Mapping[str, Any]) -> dict[str, Any]:
    """Every section present (an empty or missing section means all defaults).

    Missing sections must still be validated so that, e.g., the token environment
    variable and the token requirement apply without an ``api:`` block.
    """
    sections: dict[str, Any] = {name: {} for name in model.model_fields}
    for key, value in data.items():
        sections[key] = {} if value is None and key in sections else value
    return sections


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys instead of keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        """Construct a mapping, failing on a repeated key."""
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                raise ConstructorError(
                    "in the mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(file: Path) -> Any:
    """Load a YAML document, turning every failure into a ConfigError."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = read_failure(file, exc).replace("file not found", "config file not found")
        raise ConfigError([Problem("", reason)]) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError([Problem("", _yaml_failure(file, exc))]) from None


def _yaml_failure(file: Path, exc: yaml.YAMLError) -> str:
    """Describe a YAML error with its line and column (and where the broken construct began)."""
    problem = getattr(exc, "problem", None) or str(exc)
    message = f"invalid YAML in {file}{_at(getattr(exc, 'problem_mark', None))}: {problem}"
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if context and context_mark is not None:
        message += f" ({context} started{_at(context_mark)})"
    return message


def _at(mark: yaml.Mark | None) -> str:
    """`` at line L, column C`` for a YAML mark (1-based), or nothing."""
    return "" if mark is None else f" at line {mark.line + 1}, column {mark.column + 1}"


# --------------------------------------------------------------------------- error translation

_INTERNAL_LOC = re.compile(
    r"(function-(after|before|wrap|plain)|lax-or-strict|json-or-python|chain|nullable)\[.*\]"
)

_MESSAGES = {
    "missing": "required",
    "extra_forbidden": "unknown key",
    "string_type": "expected a string",
    "bool_type": "expected true or false",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "string_too_short": "must not be empty",
}

_BOUNDS = {
    "greater_than": ("gt", "must be greater than {}"),
    "greater_than_equal": ("ge", "must be at least {}"),
    "less_than": ("lt", "must be less than {}"),
    "less_than_equal": ("le", "must be at most {}"),
}


def _to_problem(error: Mapping[str, Any]) -> Problem:
    """Translate one pydantic error into a Problem with a dotted path and a short message."""
    return Problem(_error_path(error["loc"]), _error_message(error))


def _error_path(loc: Sequence[str | int]) -> str:
    """Join a pydantic loc with dots, dropping pydantic's internal schema labels."""
    parts = [
        str(part)
        for part in loc
        if not (isinstance(part, str) and (part == "[key]" or _INTERNAL_LOC.fullmatch(part)))
    ]
    return ".".join(parts)


def _error_message(error: Mapping[str, Any]) -> str:
    """A short human message for a pydantic error (never including the input value)."""
    kind: str = error["type"]
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    if kind in _BOUNDS:
        key, template = _BOUNDS[kind]
        return template.format(_number(ctx[key]))
    if kind == "literal_error":
        return "must be one of " + ", ".join(re.findall(r"'([^']*)'", str(ctx["expected"])))
    if kind == "too_short":
        return "must not be empty"
    if kind in {"value_error", "assertion_error"}:
        return str(ctx["error"])
    return str(error["msg"])


def _number(value: Any) -> str:
    """Render 1.0 as ``1`` and 0.5 as ``0.5``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
