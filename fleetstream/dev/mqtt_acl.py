"""Mosquitto password and ACL files from the applications' configuration.

Every application delivered over MQTT gets a subscriber login named after its
id that may only read its own topics: the fixed levels of its sink's `topic`
followed by `#` (`live/fleetstream/fleet-a/#` for the default topic). The
pipeline's publisher logins (each MQTT sink's `username`/`password`) may
write every topic. Usage::

    password_file, acl_file = write_broker_auth(
        Path("broker"), config.applications, {"fleet-a": "secret-a"})
    MosquittoService(password_file=password_file, acl_file=acl_file).start()

Passwords are stored as Mosquitto 2 hashes (`$7$`: PBKDF2-SHA512, 101
iterations, the format `mosquitto_passwd` writes), never in clear.
"""
from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Iterable, Mapping

from fleetstream.io.sinks.mqtt import MqttSink
from fleetstream.io.sinks.registry import application_sink
from fleetstream.schemas.config import Application
from fleetstream.schemas.errors import ConfigError

_PBKDF2_ITERATIONS = 101


def password_hash(password: str) -> str:
    """A password as Mosquitto 2's password file stores it."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _PBKDF2_ITERATIONS)
    return (f"$7${_PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}$"
            f"{base64.b64encode(digest).decode()}")


def broker_auth(applications: Iterable[Application],
                subscriber_passwords: Mapping[str, str]) -> tuple[str, str]:
    """The password file and ACL file texts.

    `subscriber_passwords` maps an application id to its subscribers' password;
    every key must be an application with an MQTT sink. Every MQTT sink needs
    `username` and `password` (its publisher login).
    """
    topic_filters: dict[str, str] = {}
    publishers: dict[str, str] = {}
    for application in applications:
        if application.sink_options.get("type") != MqttSink.TYPE:
            continue
        where = f"applications[{application.id}].sink"
        sink = application_sink(application)
        assert isinstance(sink, MqttSink)
        if sink.username is None or sink.password is None:
            raise ConfigError(f"{where}: a broker with logins needs username and password")
        if publishers.setdefault(sink.username, sink.password) != sink.password:
            raise ConfigError(f"{where}.password: differs from another sink's password for "
                              f"publisher {sink.username!r}")
        for other, other_filter in topic_filters.items():
            if _overlap(sink.topic_filter, other_filter):
                raise ConfigError(f"{where}.topic: its topics {sink.topic_filter} overlap "
                                  f"applications[{other}]'s {other_filter}")
        topic_filters[application.id] = sink.topic_filter
    for app_id in subscriber_passwords:
        if app_id not in topic_filters:
            raise ConfigError(f"subscriber password for {app_id!r}: no application with "
                              f"that id delivers over MQTT")
        if app_id in publishers:
            raise ConfigError(f"subscriber login {app_id!r} is also a publisher username")
    logins = {**publishers, **subscriber_passwords}
    password_file = "".join(f"{user}:{password_hash(password)}\n"
                            for user, password in sorted(logins.items()))
    acl_file = "".join(f"user {user}\ntopic write #\n\n" for user in sorted(publishers))
    acl_file += "".join(f"user {app_id}\ntopic read {topic_filters[app_id]}\n\n"
                        for app_id in sorted(subscriber_passwords))
    return password_file, acl_file


def write_broker_auth(folder: Path, applications: Iterable[Application],
                      subscriber_passwords: Mapping[str, str]) -> tuple[Path, Path]:
    """Write `passwords` and `acl` into `folder`; return their paths."""
    password_text, acl_text = broker_auth(applications, subscriber_passwords)
    folder.mkdir(parents=True, exist_ok=True)
    password_file, acl_file = folder / "passwords", folder / "acl"
    password_file.write_text(password_text)
    password_file.chmod(0o600)
    acl_file.write_text(acl_text)
    return password_file, acl_file


def _overlap(filter_a: str, filter_b: str) -> bool:
    """True when two `<levels>/#` filters share a topic."""
    levels_a, levels_b = filter_a.split("/")[:-1], filter_b.split("/")[:-1]
    shorter = min(len(levels_a), len(levels_b))
    return levels_a[:shorter] == levels_b[:shorter]
