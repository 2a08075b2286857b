"""What every config section shares: the frozen base model, the load context and
problems located on a key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from processor.config.env import EnvScalar, typed_for


@dataclass(frozen=True, slots=True)
class LoadContext:
    """What validators need from ``parse_config``: where the file lives and the environment."""

    base_dir: Path
    env: Mapping[str, str]


def load_context(info: ValidationInfo) -> LoadContext | None:
    """The load context, or None when a model is constructed directly in code."""
    return info.context if isinstance(info.context, LoadContext) else None


def field_problems(title: str, problems: Sequence[tuple[str, str]]) -> ValidationError:
    """Build a ValidationError locating each ``(field, message)`` pair; inputs are never kept."""
    details = [
        InitErrorDetails(
            type=PydanticCustomError("config_problem", "{message}", {"message": message}),
            loc=(field,),
            input=None,
        )
        for field, message in problems
    ]
    return ValidationError.from_exception_data(title, details)


class Frozen(BaseModel):
    """Base for every config section: immutable, unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _type_env_values(cls, data: Any) -> Any:
        """Give each whole-value ``${env:...}`` the scalar type of the key it sets."""
        if not isinstance(data, Mapping):
            return data
        fields = cls.model_fields
        return {
            key: typed_for(fields[key].annotation, value)
            if isinstance(value, EnvScalar) and key in fields
            else value
            for key, value in data.items()
        }
