"""A 2xx is a promise even when the API process dies: events spooled while Kafka is away survive a
SIGKILL of the whole server, are replayed by the next one, and land in ClickHouse once each; and a
full spool refuses with 503 whatever it cannot keep, none of which is stored later.

Real granian servers (a process group of their own, so the test can kill it), the stack's Kafka and
the session's ingest worker and ClickHouse; the spool is read back with its own reader.
"""

import os
import signal
import time
import uuid
from pathlib import Path

import httpx
import orjson

from ingest.events import Topics
from storage.postgres import domains
from tests.conftest import ApiServer, _free_port, api_server
from tests.e2e.spool_contents import spooled_records, values_of
from tests.integration.ingest.test_consumer import settle

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
# Generous on a loaded 2-core machine: the replay of a few dozen records normally takes a second.
STORED_TIMEOUT = 90
FULL_SPOOL_BODY = {
    "error": "service_unavailable",
    "message": "Kafka is unreachable and this server's event spool is full; retry later.",
}


def unreachable_kafka(server_env: dict, spool_dir: Path, **extra: str) -> dict:
    """The shared pipeline's topics, a spool directory of the test's own and Kafka a closed port."""
    return {**reachable_kafka(server_env, spool_dir), "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{_free_port()}", **extra}


def reachable_kafka(server_env: dict, spool_dir: Path) -> dict:
    return {
        **server_env,
        "SLUICE_SPOOL_DIR": str(spool_dir),
        # Each request comes from an address of its own (X-Forwarded-For): other runs share Redis.
        "SLUICE_TRUSTED_PROXIES": "127.0.0.1",
        "SLUICE_PIXEL_RATE_LIMIT": "1000000",
    }


def site(tenants) -> tuple[dict, str]:
    ws = tenants.workspace(tier="pro")
    host = f"durable-{uuid.uuid4().hex[:8]}.example"
    tenants.run(lambda pool: domains.create_domain(pool, ws["id"], host, {}))
    return ws, host


class Sender:
    """Pixel events and usage records, each carrying a probe no other event has; remembers which
    probes were answered 2xx and which were refused."""

    def __init__(self, url: str, host: str, key: str):
        self.host, self.run = host, uuid.uuid4().hex[:8]
        self.client = httpx.Client(base_url=url + "/api/v1", timeout=30)
        self.key, self.sent = key, 0
        self.accepted: list[str] = []
        self.refused: list[httpx.Response] = []
        self.refused_probes: list[str] = []
        self.usage_accepted: list[str] = []

    def close(self) -> None:
        self.client.close()

    def probe(self) -> str:
        self.sent += 1
        return f"{self.run}-{self.sent:05d}"  # one width: every event has the same size

    def event(self, probe: str) -> dict:
        return {"event": "pageview", "url": f"https://{self.host}/p/{probe}", "properties": {"probe": probe}}

    def headers(self) -> dict:
        return {"User-Agent": CHROME, "X-Forwarded-For": f"10.{self.sent % 250}.{self.sent // 250 % 250}.7"}

    def track(self) -> httpx.Response:
        probe = self.probe()
        r = self.client.post("/pixel/track", json=self.event(probe), headers=self.headers())
        return self._judge(r, [probe], lambda: r.json() == {"tracked": True} and r.headers["x-sluice-event-id"])

    def track_batch(self, size: int) -> httpx.Response:
        probes = [self.probe() for _ in range(size)]
        r = self.client.post("/pixel/track", json=[self.event(p) for p in probes], headers=self.headers())
        return self._judge(r, probes, lambda: r.json()["accepted"] == size)

    def track_gif(self) -> httpx.Response:
        probe = self.probe()
        event = self.event(probe)
        params = {"event": "pageview", "url": event["url"], "properties": orjson.dumps(event["properties"]).decode()}
        r = self.client.get("/pixel/track", params=params, headers=self.headers())
        return self._judge(r, [probe], lambda: r.content[:6] == b"GIF89a")

    def use(self) -> httpx.Response:
        probe = self.probe()
        body = {"feature": "api_calls", "quantity": 1, "metadata": {"probe": probe}}
        r = self.client.post("/entitlements/usage", json=body, headers={"Authorization": f"Bearer {self.key}"})
        assert r.status_code == 200 and r.json()["recorded"] is True, r.text
        self.usage_accepted.append(probe)
        return r

    def _judge(self, r: httpx.Response, probes: list[str], took) -> httpx.Response:
        if r.status_code == 200:
            assert took(), f"{r.status_code} {r.headers} {r.content[:300]!r}"
            self.accepted += probes
        else:
            assert r.status_code == 503, f"{r.status_code} {r.text}"
            self.refused.append(r)
            self.refused_probes += probes
        return r


def spooled_probes(spool_dir: Path, topics: Topics) -> dict[str, tuple[list[str], list[str]]]:
    """Owner directory → (pixel probes, usage probes) of what it holds, in spool order."""
    held = {}
    for owner, records in spooled_records(spool_dir).items():
        pixel = [orjson.loads(v["properties"])["probe"] for v in values_of(records, topics.pixel)]
        usage = [orjson.loads(v["metadata"])["probe"] for v in values_of(records, topics.usage)]
        held[owner] = (pixel, usage)
    return held


def owner_pid(spool_dir: Path) -> int:
    """The process that claimed the one owner directory (named <host>-<pid>-<random>)."""
    owners = [p.name for p in spool_dir.iterdir() if p.is_dir() and not p.name.startswith(".claim-")]
    assert len(owners) == 1, owners
    return int(owners[0].rsplit("-", 2)[1])


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def dead(pid: int) -> bool:
    """Gone or a zombie: either way its descriptors, and its spool lock, are released."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.3)


def wait_for_probes(read, expected: list[str], what: str) -> None:
    """Polls `read()` until it returns `expected`; fails showing what it held last."""
    deadline, held = time.monotonic() + STORED_TIMEOUT, None
    while (held := read()) != expected:
        # Rows only come: more than expected already is a duplicate or a stray.
        assert len(held) <= len(expected), f"{what}: {len(held) - len(set(held))} duplicates, {len(held)} rows"
        missing, extra = sorted(set(expected) - set(held))[:5], sorted(set(held) - set(expected))[:5]
        assert time.monotonic() < deadline, (
            f"{what}: after {STORED_TIMEOUT} s, {len(held)} rows of {len(expected)} expected; missing {missing}…, "
            f"not expected {extra}…, {len(held) - len(set(held))} duplicates"
        )
        time.sleep(0.3)


def stored_pixel_probes(query, workspace_id: int) -> list[str]:
    rows = query(
        "SELECT JSONExtractString(properties, 'probe') FROM events WHERE workspace_id = {ws:UInt64}",
        {"ws": workspace_id},
    )
    return sorted(probe for (probe,) in rows)


def stored_usage_probes(query, workspace_id: int) -> list[str]:
    rows = query(
        "SELECT JSONExtractString(metadata, 'probe') FROM usage_events WHERE workspace_id = {ws:UInt64}",
        {"ws": workspace_id},
    )
    return sorted(probe for (probe,) in rows)


def pixel_counts(query, workspace_id: int) -> tuple[int, int]:
    """count() and uniqExact of the probe: rows, and events among them."""
    rows = query(
        "SELECT count(), uniqExact(JSONExtractString(properties, 'probe')) FROM events "
        "WHERE workspace_id = {ws:UInt64}",
        {"ws": workspace_id},
    )
    return tuple(rows[0])


def wait_until_drained(server: ApiServer, spool_dir: Path, gone: str) -> None:
    """The new server replayed everything: the dead owner's directory is removed and nothing waits."""
    wait_until(lambda: not (spool_dir / gone).exists(), STORED_TIMEOUT, f"{gone} replayed and removed")
    wait_until(lambda: metric(server.url, "sluice_spool_records_pending") == 0, STORED_TIMEOUT, "an empty spool")


def metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_sigkilled_server_s_spooled_events_are_replayed_by_the_next_and_stored_once(
    server_env, tenants, tmp_path, clickhouse_query
):
    ws, host = site(tenants)
    key = tenants.key(ws["id"], scopes=("entitlements:write",))
    topics = Topics.with_prefix(server_env["SLUICE_KAFKA_TOPIC_PREFIX"])
    spool_dir = tmp_path / "spool"
    with api_server(unreachable_kafka(server_env, spool_dir), tmp_path) as first:
        sender = Sender(first.url, host, key)
        try:
            for n in range(30):
                sender.track()
                if n % 10 == 0:
                    sender.track_batch(5)
                    sender.track_gif()
                    sender.use()
        finally:
            sender.close()
        assert sender.refused == [] and len(sender.accepted) == 30 + 3 * 6
        worker = owner_pid(spool_dir)
        assert parent_of(worker) == first.process.pid, "the spool is held by granian's worker"
        # The worker holds every event answered 2xx, none replayed yet (Kafka is a closed port).
        held = spooled_probes(spool_dir, topics)
        [(owner, (pixel, usage))] = held.items()
        assert sorted(pixel) == sorted(sender.accepted) and sorted(usage) == sorted(sender.usage_accepted)
        os.killpg(first.process.pid, signal.SIGKILL)  # the worker and the main process, no shutdown at all
        first.process.wait(10)
        wait_until(lambda: dead(worker), 30, f"the worker {worker} to die")
    # What the dead worker left on disk: the same, and all its spool holds (nothing of another topic).
    assert spooled_probes(spool_dir, topics) == held
    left = len(spooled_records(spool_dir)[owner])
    assert left == len(pixel) + len(usage)

    with api_server(reachable_kafka(server_env, spool_dir), tmp_path) as second:
        wait_for_probes(
            lambda: stored_pixel_probes(clickhouse_query, ws["id"]), sorted(sender.accepted), "events answered 2xx"
        )
        wait_until_drained(second, spool_dir, owner)
        replayed = metric(second.url, "sluice_spool_replayed_total")
        # Sentinels behind everything the new server sent: any duplicate is stored by now.
        settle(clickhouse_query, topics)
    assert pixel_counts(clickhouse_query, ws["id"]) == (len(sender.accepted), len(sender.accepted))
    assert stored_usage_probes(clickhouse_query, ws["id"]) == sorted(sender.usage_accepted)
    assert replayed == left, "each record the dead worker left is replayed once"


def test_full_spool_answers_503_and_stores_only_what_it_answered_2xx_for(
    server_env, tenants, tmp_path, clickhouse_query
):
    ws, host = site(tenants)
    topics = Topics.with_prefix(server_env["SLUICE_KAFKA_TOPIC_PREFIX"])
    spool_dir = tmp_path / "spool"
    # Room for a handful of pixel records (about a kilobyte each).
    env = unreachable_kafka(server_env, spool_dir, SLUICE_SPOOL_MAX_BYTES="8000")
    with api_server(env, tmp_path) as first:
        sender = Sender(first.url, host, tenants.key(ws["id"]))
        try:
            while len(sender.refused) < 3:
                sender.track()
                assert sender.sent < 200, "the spool never filled up"
            sender.track_batch(3)  # refused whole
            sender.track_gif()
        finally:
            sender.close()
        assert sender.accepted, "some events fitted in the spool"
        assert len(sender.refused) == 5, [r.status_code for r in sender.refused]
        for r in sender.refused:
            assert r.status_code == 503 and r.json() == FULL_SPOOL_BODY, r.text
            assert int(r.headers["retry-after"]) > 0
        [(owner, (pixel, _usage))] = spooled_probes(spool_dir, topics).items()
        assert sorted(pixel) == sorted(sender.accepted), "the spool holds exactly the events answered 2xx"
    with api_server(reachable_kafka(server_env, spool_dir), tmp_path) as second:
        wait_for_probes(
            lambda: stored_pixel_probes(clickhouse_query, ws["id"]), sorted(sender.accepted), "events answered 2xx"
        )
        wait_until_drained(second, spool_dir, owner)
        settle(clickhouse_query, topics)
    stored = stored_pixel_probes(clickhouse_query, ws["id"])
    assert stored == sorted(sender.accepted)
    assert not set(stored) & set(sender.refused_probes), "an event answered 503 was stored"
