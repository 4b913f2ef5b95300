"""Secrets in configuration: a `<key>_env` entry names the environment variable holding the value.

Passwords and tokens stay out of the configuration files: the file says
`sasl.password_env: STELLANTIS_KAFKA_PASSWORD`, and the value is read from the
environment when the configuration is checked. Error messages name the entry and
the variable, never the value.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from fleetstream.schemas.errors import ConfigError


def secret_from_env(variable: Any, where: str, environ: Mapping[str, str]) -> bytes:
    """The value of the environment variable named `variable`; ConfigError naming it (never
    its value) when it is not set or empty."""
    if not isinstance(variable, str) or not variable:
        raise ConfigError(f"{where}: name the environment variable that holds the secret")
    value = environ.get(variable)
    if not value:
        raise ConfigError(f"{where}: environment variable {variable} is not set; export it "
                          f"before starting fleetstream")
    return value.encode()


def client_config(where: str, given: Any, own: Iterable[str],
                  environ: Mapping[str, str]) -> dict[str, Any]:
    """A client library's settings (librdkafka's `consumer_config`, `producer_config`) as given,
    with each `<key>_env` entry replaced by `<key>` and the variable's value.

    ConfigError naming the entry for a value that is not a mapping, a key in `own` (set by
    FleetStream itself) or an unset variable.
    """
    if not isinstance(given, Mapping):
        raise ConfigError(f"{where}: expected a mapping of settings, got {type(given).__name__}")
    own = frozenset(own)
    config: dict[str, Any] = {}
    for key, value in given.items():
        name = str(key)[:-4] if str(key).endswith("_env") else str(key)
        if name in own:
            raise ConfigError(f"{where}.{key}: set by FleetStream ({', '.join(sorted(own))}), "
                              f"not here")
        config[name] = (secret_from_env(value, f"{where}.{key}", environ).decode()
                        if name != key else value)
    return config
