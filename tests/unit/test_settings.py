"""Settings: precedence, parsing errors, and the README table kept in step with the code."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from app.contracts.exceptions import ConfigError
from app.contracts.settings import ENV_PREFIX, Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_work_with_an_empty_environment() -> None:
    s = Settings.from_env({})
    assert s.bootstrap_servers == "127.0.0.1:9092"
    assert s.topic("clicks") == "clicks"


def test_argument_beats_environment_beats_default() -> None:
    env = {"IVT_APP_ID": "from-env", "IVT_CLICK_PARTITIONS": "12"}
    s = Settings.from_env(env, app_id="from-arg")
    assert s.app_id == "from-arg"
    assert s.click_partitions == 12
    assert Settings.from_env({}).click_partitions == 6


def test_bad_values_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="IVT_CLICK_PARTITIONS must be an integer"):
        Settings.from_env({"IVT_CLICK_PARTITIONS": "many"})
    with pytest.raises(ConfigError, match="IVT_FETCH_MAX_WAIT_MS must be >= 0"):
        Settings.from_env({"IVT_FETCH_MAX_WAIT_MS": "-1"})
    with pytest.raises(ConfigError, match="IVT_SESSION_TIMEOUT_S must be within 6-1800"):
        Settings.from_env({"IVT_SESSION_TIMEOUT_S": "2"})
    with pytest.raises(ConfigError, match="IVT_BROKER_PORT must be a TCP port"):
        Settings.from_env({"IVT_BROKER_PORT": "70000"})
    with pytest.raises(ConfigError, match="unknown setting"):
        Settings.from_env({}, no_such_thing=1)


def test_to_env_reproduces_the_settings_in_a_child_process() -> None:
    s = Settings.from_env({}, topic_prefix="t1-", data_dir=Path("/tmp/x"), click_partitions=3)
    assert Settings.from_env(s.to_env()) == s


def test_prefix_isolates_topics() -> None:
    assert Settings.from_env({"IVT_TOPIC_PREFIX": "run7-"}).topic("verdicts") == "run7-verdicts"


def test_readme_configuration_table_lists_every_setting() -> None:
    documented = set(re.findall(r"^\| `(IVT_[A-Z_]+)` \|", README.read_text(), flags=re.M))
    in_code = {ENV_PREFIX + f.name.upper() for f in fields(Settings)}
    assert documented == in_code
