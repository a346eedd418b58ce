"""Configuration is read from AUTHZ_* variables and refused clearly when malformed."""

from datetime import timedelta

import pytest

from service.config import ConfigError, from_env
from tests.support import ROOT


def test_defaults_give_sqlite_and_seven_day_links():
    settings = from_env({"AUTHZ_POLICY_DIR": str(ROOT)})
    assert settings["AUTHZ_DATABASE_URL"].startswith("sqlite:///")
    assert settings["AUTHZ_ACTIVATION_TTL"] == timedelta(days=7)


def test_activation_validity_is_configurable_in_hours():
    settings = from_env({"AUTHZ_POLICY_DIR": str(ROOT), "AUTHZ_ACTIVATION_TTL_HOURS": "24"})
    assert settings["AUTHZ_ACTIVATION_TTL"] == timedelta(hours=24)


@pytest.mark.parametrize(
    ("name", "value"),
    [("AUTHZ_ACTIVATION_TTL_HOURS", "abc"), ("AUTHZ_ACTIVATION_TTL_HOURS", "0"), ("AUTHZ_MAX_EVALUATIONS", "-1")],
)
def test_malformed_values_are_refused_with_the_variable_named(name, value):
    with pytest.raises(ConfigError, match=name):
        from_env({"AUTHZ_POLICY_DIR": str(ROOT), name: value})


def test_a_policy_folder_without_policies_polar_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"policies\.polar"):
        from_env({"AUTHZ_POLICY_DIR": str(tmp_path)})


def test_production_refuses_to_start_without_an_explicit_database():
    with pytest.raises(ConfigError, match="AUTHZ_DATABASE_URL"):
        from_env({"AUTHZ_POLICY_DIR": str(ROOT), "AUTHZ_ENV": "production"})
    settings = from_env({"AUTHZ_POLICY_DIR": str(ROOT), "AUTHZ_ENV": "production",
                         "AUTHZ_DATABASE_URL": "postgresql+psycopg://authz@db/authz"})
    assert settings["AUTHZ_DATABASE_URL"].startswith("postgresql")


def test_settings_file_is_read_and_the_environment_wins(tmp_path):
    file = tmp_path / "authz.env"
    file.write_text("# settings\nAUTHZ_ACTIVATION_TTL_HOURS=48\nAUTHZ_MAX_EVALUATIONS = 10\n")
    settings = from_env({"AUTHZ_POLICY_DIR": str(ROOT), "AUTHZ_CONFIG_FILE": str(file), "AUTHZ_MAX_EVALUATIONS": "20"})
    assert settings["AUTHZ_ACTIVATION_TTL"] == timedelta(hours=48)
    assert settings["AUTHZ_MAX_EVALUATIONS"] == 20


def test_a_malformed_settings_file_names_its_line(tmp_path):
    file = tmp_path / "authz.env"
    file.write_text("AUTHZ_MAX_EVALUATIONS=10\nnot a setting\n")
    with pytest.raises(ConfigError, match=r"authz.env:2"):
        from_env({"AUTHZ_POLICY_DIR": str(ROOT), "AUTHZ_CONFIG_FILE": str(file)})
