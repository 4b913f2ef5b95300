"""API keys: from each application's `api_keys_env`, compared as digests in constant time."""
from __future__ import annotations

import hashlib
import hmac
from typing import Mapping, Sequence

from fleetstream.schemas.config import Application
from fleetstream.schemas.errors import ConfigError


def _digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


class ApiKeys:
    """Which application a bearer key belongs to. Only SHA-256 digests of the keys are
    kept; a presented key's digest is compared with every one (`hmac.compare_digest`, no
    early exit), so the time taken does not tell how close a guess was. An `Authorization`
    header found valid is remembered (at most `MAX_REMEMBERED`), so a client's key is
    checked once per process; a header not found valid is never remembered and always
    takes the full comparison."""

    MAX_REMEMBERED = 1024

    def __init__(self, keys: Mapping[str, Sequence[str]]) -> None:
        """`keys`: application id -> its keys."""
        self._digests = [(_digest(key), app_id) for app_id, app_keys in keys.items()
                         for key in app_keys]
        self._valid: dict[str, str] = {}

    @classmethod
    def from_environment(cls, applications: Sequence[Application],
                         environ: Mapping[str, str]) -> ApiKeys:
        """The keys named by each application's `api_keys_env`; ConfigError naming a missing
        or empty variable, or a key given to two applications."""
        keys: dict[str, list[str]] = {}
        owner: dict[str, str] = {}
        for app in applications:
            if app.api_keys_env is None:
                continue
            where = f"applications[{app.id}].api_keys_env"
            text = environ.get(app.api_keys_env)
            if text is None:
                raise ConfigError(f"{where}: the environment variable {app.api_keys_env} is not "
                                  f"set; give it the application's API keys, comma-separated")
            app_keys = [key.strip() for key in text.split(",") if key.strip()]
            if not app_keys:
                raise ConfigError(f"{where}: the environment variable {app.api_keys_env} holds "
                                  f"no key")
            for key in app_keys:
                if len(key) < 16:
                    raise ConfigError(f"{where}: a key in {app.api_keys_env} is shorter than "
                                      f"16 characters; use long random keys")
                if owner.setdefault(key, app.id) != app.id:
                    raise ConfigError(f"{where}: a key in {app.api_keys_env} is also a key of "
                                      f"{owner[key]}; each key belongs to one application")
            keys[app.id] = app_keys
        if not keys:
            raise ConfigError("applications: no application has api_keys_env; fleetstream api "
                              "needs at least one application with API keys")
        return cls(keys)

    def application_of(self, authorization: str | None) -> str | None:
        """The application of an `Authorization: Bearer <key>` header, or None."""
        known = self._valid.get(authorization) if authorization else None
        if known is not None:
            return known
        if not authorization or len(authorization) > 1024:
            return None
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return None
        presented = _digest(key.strip())
        found = None
        for digest, app_id in self._digests:
            if hmac.compare_digest(digest, presented):
                found = app_id
        if found is not None and len(self._valid) < self.MAX_REMEMBERED:
            self._valid[authorization] = found
        return found
