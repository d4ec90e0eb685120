"""storage/config.py: one reader, one boolean syntax, one error format, for every variable."""

import ipaddress
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.config import ROOT, Config, ConfigError, Flag, Integer, Number, load, sections


def variables():
    return [(cls, f, f.metadata["variable"]) for cls in sections() for f in fields(cls)]


def refusal(environ: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        load(environ)
    return str(caught.value)


def test_an_empty_environment_gives_every_default():
    assert load({}) == Config()
    assert load({}).shared.database_url == "postgresql://sluice@127.0.0.1:5432/sluice"


def test_unset_and_empty_values_both_mean_the_default():
    assert load({"SLUICE_PORT": "", "SLUICE_RATE_LIMITS": "  ", "DATABASE_URL": ""}) == Config()


def test_every_variable_is_declared_once_with_a_meaning():
    names = [var.name for _, _, var in variables()]
    assert len(names) == len(set(names))
    assert {"DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "CLICKHOUSE_URL"} <= set(names)
    assert all(n.startswith("SLUICE_") or n.endswith(("_URL", "_SERVERS")) for n in names)
    assert all(var.meaning and var.cast.allowed for _, _, var in variables())


def test_every_default_is_itself_an_allowed_value():
    """The defaults pass their own casters: README's table never shows a value the reader would refuse."""
    for _, f, var in variables():
        if isinstance(f.default, (int, float)) and not isinstance(f.default, bool):
            assert var.cast(str(f.default)) == f.default, var.name


def test_values_are_typed():
    config = load(
        {
            "SLUICE_PORT": "9000",
            "SLUICE_WEBHOOK_POLL_SECONDS": "0.1",
            "SLUICE_PIXEL_KEEP_BOTS": "yes",
            "SLUICE_SPOOL_DIR": "spool",
            "SLUICE_LOG_LEVEL": "WARNING",
        }
    )
    assert config.api.port == 9000 and config.webhooks.poll_seconds == 0.1 and config.api.pixel_keep_bots is True
    assert config.api.spool_dir == Path("spool").resolve() and config.shared.log_level == "warning"


def test_a_bad_integer_names_the_variable_the_value_and_what_is_allowed():
    assert (
        refusal({"SLUICE_WEBHOOK_CONCURRENCY": "abc"})
        == "SLUICE_WEBHOOK_CONCURRENCY has value 'abc'; expected an integer ≥ 1"
    )
    assert (
        refusal({"SLUICE_HEADER_TIMEOUT_SECONDS": "61"})
        == "SLUICE_HEADER_TIMEOUT_SECONDS has value '61'; expected an integer from 1 to 60"
    )
    assert load({"SLUICE_HEADER_TIMEOUT_SECONDS": "60"}).api.header_timeout_seconds == 60


@pytest.mark.parametrize("raw", ["fast", "nan", "inf", "0", "-1"])
def test_a_bad_number_is_refused_in_the_same_format(raw):
    assert (
        refusal({"SLUICE_WEBHOOK_POLL_SECONDS": raw})
        == f"SLUICE_WEBHOOK_POLL_SECONDS has value {raw!r}; expected a number > 0"
    )


def test_the_mcp_timeout_is_capped_where_a_registry_entry_is():
    assert load({"SLUICE_MCP_TIMEOUT_SECONDS": "300"}).mcp.timeout_seconds == 300.0
    assert refusal({"SLUICE_MCP_TIMEOUT_SECONDS": "301"}).endswith("expected a number > 0 and ≤ 300")


FLAGS = [var.name for _, _, var in variables() if isinstance(var.cast, Flag)]


def value_of(config: Config, name: str):
    return next(
        getattr(getattr(config, part.name), f.name)
        for part in fields(config)
        for f in fields(part.default_factory)
        if f.metadata["variable"].name == name
    )


@pytest.mark.parametrize("name", FLAGS)
def test_every_boolean_reads_the_same_words(name):
    assert all(value_of(load({name: raw}), name) is True for raw in ("1", "true", "YES", "On"))
    assert all(value_of(load({name: raw}), name) is False for raw in ("0", "false", "No", "OFF"))
    assert refusal({name: "maybe"}) == f"{name} has value 'maybe'; expected on or off (also 1/0, true/false, yes/no)"


def test_choices_and_patterns_are_refused_with_their_options():
    assert (
        refusal({"SLUICE_LOG_LEVEL": "verbose"})
        == "SLUICE_LOG_LEVEL has value 'verbose'; expected one of debug, info, warning, error, critical"
    )
    assert "letters, digits" in refusal({"SLUICE_KAFKA_TOPIC_PREFIX": "sluice events."})
    assert refusal({"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092,,other"}).endswith("expected comma-separated host:port")


def test_urls_need_their_scheme_and_a_refused_one_hides_its_password():
    assert (
        refusal({"DATABASE_URL": "mysql://sluice:hunter2@db/sluice"})
        == "DATABASE_URL has value 'mysql://sluice:***@db/sluice'; expected a URL (postgresql:// or postgres://)"
    )
    assert load({"REDIS_URL": "rediss://cache:6380/1"}).shared.redis_url == "rediss://cache:6380/1"
    assert load({"SLUICE_PUBLIC_URL": "https://api.example.com/"}).api.public_url == "https://api.example.com"


def test_address_lists_become_networks_and_nameservers():
    config = load(
        {
            "SLUICE_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1",
            "SLUICE_WEBHOOK_ALLOWED_NETWORKS": "::1",
            "SLUICE_DNS_NAMESERVERS": "10.0.0.2, 127.0.0.1:5353, [::1]:53",
        }
    )
    assert config.api.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32"))
    assert config.webhooks.allowed_networks == (ipaddress.ip_network("::1/128"),)
    assert config.api.dns_nameservers == (("10.0.0.2", 53), ("127.0.0.1", 5353), ("::1", 53))
    assert refusal({"SLUICE_TRUSTED_PROXIES": "10.0.0.0/8, nonsense"}).startswith("SLUICE_TRUSTED_PROXIES has value")
    assert refusal({"SLUICE_DNS_NAMESERVERS": "10.0.0.2:99999"}).startswith("SLUICE_DNS_NAMESERVERS has value")


def test_the_ca_bundle_is_a_flag_or_an_existing_file(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert load({"SLUICE_WEBHOOK_CA_BUNDLE": "off"}).webhooks.verify is False
    assert load({"SLUICE_WEBHOOK_CA_BUNDLE": str(bundle)}).webhooks.verify == str(bundle)
    assert refusal({"SLUICE_WEBHOOK_CA_BUNDLE": str(tmp_path / "missing.pem")}).endswith(
        "expected on, off, or the path of a PEM file"
    )


def test_machine_paths_default_under_the_checkout():
    config = Config()
    assert config.api.spool_dir == ROOT / ".services" / "spool"
    assert config.mcp.config_path == ROOT / "mcp_servers.json"
    assert config.shared.clickhouse_url == f"chdb://{ROOT}/.services/clickhouse"


INTEGERS = [(var.name, var.cast) for _, _, var in variables() if isinstance(var.cast, Integer)]
NUMBERS = [(var.name, var.cast) for _, _, var in variables() if isinstance(var.cast, Number)]


@given(st.sampled_from(INTEGERS), st.integers(-(10**6), 10**12))
def test_an_integer_is_taken_exactly_when_it_is_within_its_bounds(variable, n):
    name, cast = variable
    within = n >= cast.low and (cast.high is None or n <= cast.high)
    if within:
        load({name: str(n)})
    else:
        with pytest.raises(ConfigError, match=f"^{name} has value '{n}'; expected an integer"):
            load({name: str(n)})


@given(st.sampled_from(NUMBERS), st.floats(allow_nan=True, allow_infinity=True))
def test_a_number_is_taken_exactly_when_it_is_finite_and_within_its_bounds(variable, x):
    name, cast = variable
    above_low = x >= cast.low if cast.low_included else x > cast.low
    within = x == x and abs(x) != float("inf") and above_low and (cast.high is None or x <= cast.high)
    if within:
        load({name: repr(x)})
    else:
        with pytest.raises(ConfigError, match=f"^{name} has value "):
            load({name: repr(x)})
