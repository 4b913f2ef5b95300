"""The errors the product raises on purpose: bad configuration, and writes that can never succeed."""
from __future__ import annotations

from typing import Any, Iterable


class ConfigError(ValueError):
    """A configuration entry is wrong; the message names the entry and the fix."""


def refuse_unknown(where: str, given: Iterable[Any], accepted: Iterable[str],
                   what: str = "key", context: str = "") -> None:
    """ConfigError naming the entries of `given` not in `accepted`, and listing those accepted."""
    accepted = set(accepted)
    unknown = sorted(str(name) for name in set(given) - accepted)
    if unknown:
        raise ConfigError(f"{where}: unknown {what}(s) {', '.join(unknown)}{context}; "
                          f"accepted: {', '.join(sorted(accepted))}")


class PermanentWriteError(Exception):
    """A write that can never succeed as it is (e.g. a record over the service's size limit).

    Deliver does not retry it: the batch goes straight to the delivery dead letters.
    """
