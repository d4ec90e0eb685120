"""Outcome enums keep the values the scripts answer with and the tables store: each enum is
checked against the Lua script or migration it mirrors, so neither side can drift alone."""

import re
from pathlib import Path

from storage.postgres.webhooks import DeliveryStatus
from storage.redis.idempotency import BeginOutcome
from storage.redis.quota import QuotaStatus

STORAGE = Path(__file__).resolve().parents[3] / "storage"


def test_quota_statuses_are_the_codes_quota_lua_answers_with():
    script = (STORAGE / "redis" / "quota.lua").read_text()
    codes = {int(code) for code in re.findall(r"return \{(\d+),", script)}
    assert codes == {status.value for status in QuotaStatus}
    assert (QuotaStatus.REFUSED, QuotaStatus.ACCEPTED, QuotaStatus.DUPLICATE, QuotaStatus.MISSING) == (0, 1, 2, 3)


def test_begin_outcomes_are_the_words_idempotency_lua_answers_with():
    script = (STORAGE / "redis" / "idempotency.lua").read_text()
    assert set(re.findall(r"return \{'([a-z_]+)'", script)) == {outcome.value for outcome in BeginOutcome}


def test_delivery_statuses_are_the_ones_the_table_allows():
    migration = (STORAGE / "postgres" / "migrations" / "0004_webhooks.sql").read_text()
    allowed = re.search(r"CHECK \(status IN \(([^)]*)\)\)", migration).group(1)
    assert set(re.findall(r"'([a-z]+)'", allowed)) == {status.value for status in DeliveryStatus}
