"""The configuration files of flashgate's own processes (the verifier sidecar, the delivery
service): YAML or JSON, read once at start-up, validated by a pydantic model; every error says
where."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from flashgate.api.schema import problems

M = TypeVar("M", bound=BaseModel)
S = TypeVar("S")


class ConfigError(Exception):
    """The configuration file is missing, unreadable or invalid; the message says where."""


def validate(model: type[M], data: object) -> M:
    """`data` as `model`. Raises ConfigError naming each field that is wrong."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        found = "; ".join(problems(exc, whole="(top)"))
        raise ConfigError(f"invalid configuration: {found}") from None


def load(path: Path, settings_from: Callable[[object], S]) -> S:
    """Read, parse (YAML, or JSON which YAML reads too) and hand the mapping to
    `settings_from`. Raises ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"config {path} is not valid {path.suffix.lstrip('.') or 'YAML'}: "
                          f"{exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of settings")
    try:
        return settings_from(data)
    except ConfigError as exc:
        raise ConfigError(f"config {path}: {exc}") from None
