"""docker-compose.yml runs the same system: every service the code needs, wired alike."""

from pathlib import Path
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
URL_VARS = ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "CLICKHOUSE_URL")


def published_container_ports(service: str) -> set[int]:
    return {int(str(p).split(":")[-1]) for p in SERVICES[service].get("ports", [])}


def test_every_backing_service_is_defined():
    assert {"postgres", "redis", "kafka", "clickhouse", "api", "ingest", "webhooks"} <= set(SERVICES)


def test_webhook_dispatcher_reads_the_api_s_database():
    dispatcher = SERVICES["webhooks"]
    assert dispatcher["command"] == ["python", "-m", "ingest.webhooks.dispatcher"]
    assert dispatcher["environment"]["DATABASE_URL"] == SERVICES["api"]["environment"]["DATABASE_URL"]


def test_ingest_worker_reads_kafka_into_the_same_clickhouse_as_the_api():
    worker, api = SERVICES["ingest"], SERVICES["api"]
    assert worker["command"] == ["python", "-m", "ingest"]
    for var in ("KAFKA_BOOTSTRAP_SERVERS", "CLICKHOUSE_URL"):
        assert worker["environment"][var] == api["environment"][var]
    assert {"kafka", "clickhouse"} <= set(worker["depends_on"])


def test_api_spool_is_on_a_volume():
    spool = SERVICES["api"]["environment"]["SLUICE_SPOOL_DIR"]
    assert any(str(v).endswith(":" + spool) for v in SERVICES["api"]["volumes"])


def test_api_gets_every_connection_variable_and_they_point_at_compose_services():
    env = SERVICES["api"]["environment"]
    assert set(URL_VARS) <= set(env)
    targets = {
        "DATABASE_URL": ("postgres", 5432),
        "REDIS_URL": ("redis", 6379),
        "CLICKHOUSE_URL": ("clickhouse", 8123),
    }
    for var, (host, port) in targets.items():
        url = urlsplit(env[var])
        assert (url.hostname, url.port) == (host, port), var
        assert port in published_container_ports(host)
    kafka_host, kafka_port = env["KAFKA_BOOTSTRAP_SERVERS"].split(":")
    assert kafka_host == "kafka" and int(kafka_port) == 9092
    assert "PLAINTEXT://kafka:9092" in SERVICES["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]


def test_postgres_credentials_match_database_url():
    url = urlsplit(SERVICES["api"]["environment"]["DATABASE_URL"])
    pg = SERVICES["postgres"]["environment"]
    assert (url.username, url.password, url.path.lstrip("/")) == (
        pg["POSTGRES_USER"],
        pg["POSTGRES_PASSWORD"],
        pg["POSTGRES_DB"],
    )


def test_kafka_runs_in_kraft_mode():
    env = SERVICES["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env


def test_api_listens_where_compose_publishes_it():
    env = SERVICES["api"]["environment"]
    assert env["SLUICE_HOST"] == "0.0.0.0"
    assert int(env["SLUICE_PORT"]) in published_container_ports("api")
