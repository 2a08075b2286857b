"""The whole configuration: every room's section, assembled and loaded from YAML.

Each room declares its own section beside the code that uses it; this is the one
place that knows them all (and the one check across two of them).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from pydantic import (
    Field,
    model_validator,
)

from processor.config.base import Frozen, field_problems
from processor.config.load import load, validate
from processor.correlate.config import (
    HASH_KEY_ENV_VAR,
    CorrelationConfig,
    IdentityConfig,
    UsageConfig,
)
from processor.export.config import ExporterConfig
from processor.identity.config import DirectoryConfig, SessionsConfig
from processor.identity.intake.config import ApiConfig, WebhooksConfig
from processor.logsetup import LoggingConfig
from processor.receive.config import ConnectionsConfig, ReceiverConfig, TelemetryConfig


class Config(Frozen):
    """The whole validated configuration."""

    receiver: ReceiverConfig = Field(default_factory=ReceiverConfig)
    exporter: ExporterConfig
    api: ApiConfig = Field(default_factory=ApiConfig)
    sessions: SessionsConfig = Field(default_factory=SessionsConfig)
    correlation: CorrelationConfig = Field(default_factory=CorrelationConfig)
    directory: DirectoryConfig = Field(default_factory=DirectoryConfig)
    webhooks: WebhooksConfig = Field(default_factory=WebhooksConfig)
    identity: IdentityConfig = Field(default_factory=IdentityConfig)
    usage: UsageConfig = Field(default_factory=UsageConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    connections: ConnectionsConfig = Field(default_factory=ConnectionsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @model_validator(mode="after")
    def _label_key(self) -> Self:
        """Hashed metric labels need the hash key."""
        if self.usage.user_label == "hash" and self.identity.hash_key is None:
            raise field_problems(
                "UsageConfig",
                [
                    (
                        "usage.user_label",
                        f"hash needs identity.hash_key (or hash_key_file, or {HASH_KEY_ENV_VAR})",
                    )
                ],
            )
        return self


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read, parse and validate a YAML config file; raises ConfigError listing every problem."""
    return load(Config, path, env)


def parse_config(data: Mapping[str, Any], *, base_dir: Path, env: Mapping[str, str]) -> Config:
    """Validate already-parsed YAML; relative paths are resolved against ``base_dir``."""
    return validate(Config, data, base_dir=base_dir, env=env)
