"""Configuration is validated at start-up: every error names the entry and exits non-zero."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fleetstream.pipelines.cli import main
from fleetstream.schemas.errors import ConfigError
from fleetstream.settings.config import load_config, parse_config

GOOD_APP = {"id": "fleet-a", "permissions": ["diagnostics.odometer", "charging.*"],
            "sink": {"type": "file", "path": "out/fleet-a"}}


def config_with(**changes) -> dict:
    return {"applications": [{**GOOD_APP, **changes}]}


@pytest.mark.parametrize("raw, expected", [
    (config_with(permissions=["diagnostics.odometre"]), "unknown property 'diagnostics.odometre'"),
    (config_with(permissions=["diagnostic.*"]), "unknown capability 'diagnostic'"),
    (config_with(permissions=[]), "applications[fleet-a].permissions"),
    (config_with(sink={"type": "ftp", "path": "x"}), "unknown sink type 'ftp'"),
    (config_with(sink={"type": "file"}), "sink type 'file' needs path"),
    (config_with(sink={"type": "file", "path": "x", "bucket": "b"}), "unknown key(s) bucket"),
    (config_with(sink={"type": "file", "path": "x", "max_records": 0}),
     "applications[fleet-a].sink.max_records"),
    (config_with(sink={"type": "file", "path": "x", "max_delay": "soon"}),
     "applications[fleet-a].sink.max_delay"),
    (config_with(sink={"type": "file", "path": "x", "gzip": "yes"}),
     "applications[fleet-a].sink.gzip"),
    (config_with(id="bad id!"), "applications[0].id"),
    (config_with(colour="red"), "unknown key(s) colour"),
    ({"applications": [GOOD_APP, GOOD_APP]}, "duplicate application id 'fleet-a'"),
    ({"applications": []}, "non-empty list of applications"),
    ({"applications": [GOOD_APP], "activations": [{"vin": "V", "application_id": "nope",
                                                   "status": "approved", "at": 1}]},
     "unknown application 'nope'"),
    ({"applications": [GOOD_APP], "activations": [{"vin": "V", "application_id": "fleet-a",
                                                   "status": "approved", "at": "yesterday"}]},
     "activations[0]: `at` is not a timestamp"),
    ({"applications": [GOOD_APP], "activations": [{"application_id": "fleet-a",
                                                   "status": "approved", "at": 1}]},
     "activations[0]: `vin` must be a non-empty string"),
    ({"applications": [GOOD_APP], "activations": "missing.jsonl"}, "does not exist"),
])
def test_bad_configuration_is_refused_naming_the_entry(raw: dict, expected: str,
                                                       tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(raw, base_dir=tmp_path)
    assert expected in str(error.value)


def test_activation_file_errors_name_the_line(tmp_path: Path) -> None:
    (tmp_path / "act.jsonl").write_text(
        '{"vin": "V", "application_id": "fleet-a", "status": "approved", "at": 1}\n{oops\n')
    with pytest.raises(ConfigError, match=r"act.jsonl:2: not JSON"):
        parse_config({"applications": [GOOD_APP], "activations": "act.jsonl"}, base_dir=tmp_path)


def test_good_configuration_expands_permissions(tmp_path: Path) -> None:
    (tmp_path / "act.jsonl").write_text(
        '{"vin": "V", "application_id": "fleet-a", "status": "approved", '
        '"at": "2026-03-01T08:00:00Z"}\n\n')
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"applications": [GOOD_APP], "activations": "act.jsonl"}))
    config = load_config(path)
    [app] = config.applications
    assert app.permitted["diagnostics"] == {"odometer"}
    assert app.permitted["charging"] == {"battery_level", "estimated_range", "status",
                                         "charge_limit", "plugged_in", "charging_rate"}
    assert config.activations[0].at_ms == 1772352000000


def test_cli_exits_non_zero_before_any_data_moves(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config_with(permissions=["doors.colour"])))
    out = tmp_path / "out"
    code = main(["replay", "--input", str(tmp_path / "none.jsonl"), "--config", str(path),
                 "--output", str(out)])
    assert code == 2
    assert "unknown property 'doors.colour'" in capsys.readouterr().err
    assert not out.exists()


def test_missing_configuration_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["replay", "--input", "x", "--config", str(tmp_path / "nope.yaml")])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def _pseudonymous_app(**extra):
    return {"applications": [{"id": "fleet-a", "permissions": ["diagnostics.odometer"],
                              "sink": {"type": "file", "path": "out"}, **extra}]}


def test_pseudonymous_vehicle_ids_take_the_secret_from_the_environment():
    config = parse_config(_pseudonymous_app(vehicle_ids="pseudonymous",
                                            vehicle_id_secret_env="FLEET_A_ID_SECRET"),
                          environ={"FLEET_A_ID_SECRET": "s3cret"})
    app = config.applications[0]
    assert app.vehicle_id_secret == b"s3cret"
    pseudonym = app.vehicle_id("5YJ3E7EB0KF000001")
    assert pseudonym.startswith("p-") and len(pseudonym) == 34
    assert "s3cret" not in repr(app)


def test_vin_is_the_default_vehicle_id():
    app = parse_config(_pseudonymous_app(), environ={}).applications[0]
    assert app.vehicle_id("5YJ3E7EB0KF000001") == "5YJ3E7EB0KF000001"


@pytest.mark.parametrize("extra, environ, named", [
    ({"vehicle_ids": "hashed"}, {}, "vehicle_ids"),
    ({"vehicle_ids": "pseudonymous"}, {}, "vehicle_id_secret_env"),
    ({"vehicle_ids": "pseudonymous", "vehicle_id_secret_env": "UNSET_X"}, {}, "UNSET_X"),
    ({"vehicle_id_secret_env": "X"}, {"X": "s"}, "only used with"),
])
def test_bad_vehicle_id_settings_are_refused_naming_the_field(extra, environ, named):
    with pytest.raises(ConfigError, match=named):
        parse_config(_pseudonymous_app(**extra), environ=environ)
