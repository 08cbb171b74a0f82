"""Reading settings files (YAML, or TOML for compatibility) with errors that name the file.

A typo in a gateway's config must not pass silently or surface as a generic validation
error: every unknown key is reported with its dotted path, the file and the closest known key.
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

MAX_CONFIG_BYTES = 1 << 20
YAML_SUFFIXES = (".yaml", ".yml")


class ConfigFileError(ValueError):
    """A settings file that cannot be used; the message names the file."""


def read_config_file(path: Path) -> dict[str, Any]:
    """The file's top-level mapping (an empty file is an empty mapping)."""
    if not path.is_file():
        raise FileNotFoundError(2, "no such file or directory", str(path))
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigFileError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; not a settings file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        else:
            # safe_load builds only plain data: no tags that construct Python objects.
            data = yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as error:
        first = str(error).strip().splitlines()
        raise ConfigFileError(f"{path}: not valid {_format(path)}: {' '.join(first)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(
            f"{path}: the top level must be a mapping of settings, not {type(data).__name__}"
        )
    return data


def unknown_keys(model: type[BaseModel], data: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths in `data` that `model` does not define, each with a suggestion if one is close."""
    problems: list[str] = []
    fields = model.model_fields
    for key, value in data.items():
        path = f"{prefix}{key}"
        field = fields.get(key) if isinstance(key, str) else None
        if field is None:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            problems.append(f"'{path}'{hint}")
            continue
        nested = field.annotation
        if isinstance(value, dict) and isinstance(nested, type) and issubclass(nested, BaseModel):
            problems.extend(unknown_keys(nested, value, f"{path}."))
    return problems


def check_known_keys(model: type[BaseModel], data: dict[str, Any], path: Path) -> None:
    problems = unknown_keys(model, data)
    if problems:
        plural = "s" if len(problems) > 1 else ""
        raise ConfigFileError(f"{path}: unknown key{plural} {', '.join(problems)}")


def _format(path: Path) -> str:
    return "TOML" if path.suffix == ".toml" else "YAML"
