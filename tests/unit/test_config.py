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
    with pytest.raises(ConfigError, match="policies.polar"):
        from_env({"AUTHZ_POLICY_DIR": str(tmp_path)})
