"""The risk rules: validated, overridable per account, read from JSON strictly."""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path

import msgspec
import pytest

from bourse.errors import ConfigError
from bourse.risk.rules import RiskConfig, RiskRules, RuleName, RuleOverrides, read_config


def test_every_rule_is_off_by_default() -> None:
    rules = RiskRules()
    assert all(rules.limit(rule) is None for rule in RuleName)
    assert rules.warning_at == D("0.8")
    assert rules.order_rate_window_ns == 1_000_000_000


@pytest.mark.parametrize(
    ("field", "value", "accepted"),
    [
        ("max_gross_exposure", D(0), "a positive amount"),
        ("daily_loss_limit", D(-5), "a positive amount"),
        ("max_net_exposure", D("NaN"), "a positive amount"),
        ("max_concentration", D("1.5"), "a fraction in (0, 1]"),
        ("max_drawdown", D(0), "a fraction in (0, 1]"),
        ("max_order_rate", 0, "a whole number of orders >= 1"),
        ("order_rate_window", D(0), "seconds > 0"),
        ("warning_at", D(0), "a fraction in (0, 1]"),
        ("hysteresis", D(1), "a fraction in [0, 1)"),
    ],
)
def test_an_invalid_limit_names_the_setting_and_what_is_accepted(
    field: str, value: object, accepted: str
) -> None:
    with pytest.raises(ConfigError, match=f"invalid {field}") as raised:
        RiskRules(**{field: value})  # type: ignore[arg-type]
    assert accepted in raised.value.accepted


def test_an_override_changes_only_the_fields_it_names_and_null_turns_a_rule_off() -> None:
    config = RiskConfig(
        defaults=RiskRules(daily_loss_limit=D(1000), max_order_rate=10),
        accounts={
            "mm": RuleOverrides(daily_loss_limit=None, max_gross_exposure=D(5_000_000)),
            "small": RuleOverrides(daily_loss_limit=D(100)),
        },
    )
    assert config.rules_for("anyone") == RiskRules(daily_loss_limit=D(1000), max_order_rate=10)
    assert config.rules_for("mm") == RiskRules(
        daily_loss_limit=None, max_order_rate=10, max_gross_exposure=D(5_000_000)
    )
    assert config.rules_for("small").daily_loss_limit == D(100)
    assert config.rules_for("small").max_order_rate == 10


def test_an_invalid_override_is_refused_with_the_account_in_the_setting_name() -> None:
    with pytest.raises(ConfigError, match=r"invalid accounts\.bob\.max_drawdown"):
        RiskConfig(accounts={"bob": RuleOverrides(max_drawdown=D(2))})


def test_the_config_reads_from_json_and_refuses_unknown_fields() -> None:
    text = b"""{
        "defaults": {"daily_loss_limit": "50000", "max_concentration": 0.4},
        "accounts": {"mm1": {"daily_loss_limit": null, "max_order_rate": 500}}
    }"""
    config = msgspec.json.decode(text, type=RiskConfig)
    assert config.defaults.daily_loss_limit == D(50000)
    assert config.defaults.max_concentration == D("0.4")
    assert config.rules_for("mm1").daily_loss_limit is None
    assert config.rules_for("mm1").max_concentration == D("0.4")
    assert config.rules_for("mm1").max_order_rate == 500
    with pytest.raises(msgspec.ValidationError, match="unknown field `max_loss`"):
        msgspec.json.decode(b'{"defaults": {"max_loss": 5}}', type=RiskConfig)


def test_overrides_have_exactly_the_fields_of_the_rules() -> None:
    assert RuleOverrides.__struct_fields__ == RiskRules.__struct_fields__


def test_a_config_file_is_toml_by_its_suffix_and_json_otherwise(tmp_path: Path) -> None:
    toml = tmp_path / "risk.toml"
    toml.write_text('[defaults]\ndaily_loss_limit = "5000"\n[accounts.small]\nmax_drawdown = 0.1\n')
    config = read_config(toml)
    assert config.rules_for("anyone").daily_loss_limit == D(5000)
    assert config.rules_for("small").max_drawdown == D("0.1")
    json = tmp_path / "risk.json"
    json.write_text('{"accounts": {"mm-1": {"daily_loss_limit": null}}}')
    assert read_config(json).rules_for("mm-1").daily_loss_limit is None


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        ("risk.json", "{not json", r"invalid risk configuration .*risk\.json.*accepted: JSON"),
        ("risk.toml", "defaults = 1", r"invalid risk configuration .*accepted: TOML"),
        ("risk.json", '{"limits": {}}', r"unknown field `limits`"),
        ("risk.json", '{"defaults": {"daily_loss_limit": "-1"}}', r"risk\.json: daily_loss_limit"),
        (
            "risk.toml",
            "[accounts.bob]\nmax_drawdown = 2",
            r"risk\.toml: accounts\.bob\.max_drawdown.*a fraction in \(0, 1\]",
        ),
    ],
)
def test_a_bad_config_file_names_the_file_and_the_problem(
    tmp_path: Path, name: str, text: str, says: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=says):
        read_config(path)


def test_a_missing_config_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"risk configuration file.*a readable file \(No such"):
        read_config(tmp_path / "nope.json")
