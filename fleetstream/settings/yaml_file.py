"""The one YAML reader of the settings: a file, or a ConfigError naming it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fleetstream.schemas.errors import ConfigError


def read_yaml(path: Path, what: str) -> Any:
    """The parsed YAML of `path`; ConfigError "<what> <path> does not exist" or "not valid YAML"."""
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
