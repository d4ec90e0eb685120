"""`python -m app status`'s reading of the processes' metrics and its screen (the live command:
tests/e2e/test_status.py)."""

from app.cli.status import (
    INSERT_STALE_SECONDS,
    LAG_RECORDS_MAX,
    WEBHOOK_DUE_MAX_SECONDS,
    Line,
    Scrape,
    State,
    api_url,
    exit_code,
    lag_line,
    last_insert_line,
    parse,
    render,
    spool_line,
    total,
    webhooks_line,
)
from storage.config import load

DISPATCHER = """\
# HELP sluice_kafka_consumer_group_lag_records Records of the ingest topics not yet committed by the group
# TYPE sluice_kafka_consumer_group_lag_records gauge
sluice_kafka_consumer_group_lag_records{group="sluice-ingest",partition="0",topic="sluice.pixel"} 7.0
sluice_kafka_consumer_group_lag_records{group="sluice-ingest",partition="1",topic="sluice.pixel"} 5.0
sluice_kafka_consumer_group_lag_records{group="other",partition="0",topic="sluice.pixel"} 900.0
# TYPE sluice_webhook_outbox_backlog gauge
sluice_webhook_outbox_backlog 3.0
# TYPE sluice_webhook_outbox_oldest_due_seconds gauge
sluice_webhook_outbox_oldest_due_seconds 12.0
# TYPE sluice_webhook_attempts_total counter
sluice_webhook_attempts_total{outcome="delivered"} 4.0
"""
WORKER = """\
# TYPE sluice_consumer_lag_records gauge
sluice_consumer_lag_records{partition="0",topic="sluice.pixel"} 2.0
# TYPE sluice_consumer_last_insert_timestamp_seconds gauge
sluice_consumer_last_insert_timestamp_seconds 1000.0
"""
NOTHING = Scrape("http://127.0.0.1:9/metrics", None, Line("x", State.FAIL, "does not answer"))


def scraped(text: str) -> Scrape:
    return Scrape("http://127.0.0.1:9101/metrics", parse(text))


def test_total_sums_the_series_with_the_labels_asked_and_counters_keep_their_name():
    samples = parse(DISPATCHER)
    assert total(samples, "sluice_kafka_consumer_group_lag_records", group="sluice-ingest") == 12
    assert total(samples, "sluice_webhook_attempts_total", outcome="delivered") == 4
    assert total(samples, "sluice_spool_bytes") is None and total(None, "sluice_spool_bytes") is None


def test_lag_is_the_dispatchers_view_of_the_worker_s_group():
    line, lag = lag_line(scraped(DISPATCHER), scraped(WORKER), "sluice-ingest")
    assert (line.state, lag) == (State.OK, 12) and "seen from Kafka" in line.detail


def test_lag_falls_back_to_the_worker_s_own_view_then_to_unknown():
    line, lag = lag_line(NOTHING, scraped(WORKER), "sluice-ingest")
    assert (line.state, lag) == (State.OK, 2) and "the worker's own view" in line.detail
    line, lag = lag_line(NOTHING, NOTHING, "sluice-ingest")
    assert (line.state, lag) == (State.UNKNOWN, None)


def test_lag_past_the_alert_threshold_fails_with_a_hint():
    text = f'sluice_consumer_lag_records{{partition="0",topic="t"}} {LAG_RECORDS_MAX + 1}\n'
    line, _ = lag_line(NOTHING, scraped(text), "sluice-ingest")
    assert line.state is State.FAIL and "ingest worker" in line.hint


def test_spool_fails_while_records_wait_on_disk():
    assert spool_line(scraped("sluice_spool_records_pending 0\nsluice_spool_bytes 0\n")).state is State.OK
    line = spool_line(scraped("sluice_spool_records_pending 40\nsluice_spool_bytes 3145728\n"))
    assert line.state is State.FAIL and line.detail == "40 records pending (3.0 MiB)" and "Kafka" in line.hint
    assert spool_line(scraped(WORKER)).state is State.UNKNOWN


def test_webhooks_fail_only_when_a_due_delivery_waits_too_long():
    assert webhooks_line(scraped(DISPATCHER)).state is State.OK
    late = f"sluice_webhook_outbox_backlog 2\nsluice_webhook_outbox_oldest_due_seconds {WEBHOOK_DUE_MAX_SECONDS + 1}\n"
    assert webhooks_line(scraped(late)).state is State.FAIL
    assert webhooks_line(NOTHING).state is State.UNKNOWN


def test_an_old_insert_fails_only_while_events_wait():
    worker = scraped(WORKER)  # last insert at t=1000
    assert last_insert_line(worker, 0, 1000 + INSERT_STALE_SECONDS * 10).state is State.OK  # idle, nothing to do
    assert last_insert_line(worker, 5, 1005).detail == "5 s ago"
    assert last_insert_line(worker, 5, 1000 + INSERT_STALE_SECONDS + 1).state is State.FAIL
    never = scraped("sluice_consumer_last_insert_timestamp_seconds 0\n")
    assert last_insert_line(never, 0, 1000).detail == "none since the worker started"


def test_api_url_defaults_to_the_bind_reachable_from_here():
    assert api_url(load({}).api) == "http://127.0.0.1:8000"
    assert api_url(load({"SLUICE_HOST": "0.0.0.0", "SLUICE_PORT": "9000"}).api) == "http://127.0.0.1:9000"
    assert api_url(load({"SLUICE_API_URL": "https://api.example.com/"}).api) == "https://api.example.com"


def test_screen_colours_only_when_asked_and_hints_only_what_is_not_ok():
    lines = [
        Line("postgres", State.OK, "127.0.0.1:5432", "never shown"),
        Line("dispatcher", State.FAIL, "http://127.0.0.1:9102/metrics does not answer", "start it"),
    ]
    plain = render(lines, colour=False)
    assert "\033[" not in plain and "never shown" not in plain
    assert plain.splitlines() == [
        "postgres    ok       127.0.0.1:5432",
        "dispatcher  FAIL     http://127.0.0.1:9102/metrics does not answer",
        "                     → start it",
    ]
    coloured = render(lines, colour=True)
    assert "\033[32mok" in coloured and "\033[31mFAIL" in coloured


def test_exit_code_is_1_when_any_line_fails_and_unknown_does_not_fail():
    ok, unknown, fail = Line("a", State.OK, ""), Line("b", State.UNKNOWN, ""), Line("c", State.FAIL, "")
    assert exit_code([ok, unknown]) == 0 and exit_code([ok, fail]) == 1
