"""A test site: a fresh workspace whose pixel domain is a host of the proxy, the pages a test
defines on it, what the browser sent for it (the proxy's record) and what ClickHouse stored.

Waits poll until a condition holds, with deadlines sized for a loaded 2-core machine; a timeout
shows what was there. "Nothing stored" is shown by draining (Site.drain): the browser loads a
sentinel page whose event goes through the same proxy after anything the page under test sent,
then an event posted straight to the API lands on the same Kafka partition (events are keyed by
workspace) after all of them; once that one is stored, every earlier one is.
"""

import html
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from tests.browser.chromium import USER_AGENT
from tests.browser.proxy import Proxy, Seen

STORE_TIMEOUT = 90  # Kafka → ingest worker → chdb on a busy machine
SEND_TIMEOUT = 60  # the script batches for 1 s; Chromium and the API share two cores with others
POLL_SECONDS = 0.3
TRACK_ROUTES = ("/api/v1/pixel/track", "/x/e")
SENTINEL_PATH = "/sentinel"
ROWS = """
SELECT event, url, path, referrer, properties
FROM events WHERE workspace_id = {ws:UInt64} ORDER BY time, _offset
"""
WHOLE_ROWS = "SELECT * FROM events WHERE workspace_id = {ws:UInt64} ORDER BY time, _offset"

# What a page defines so that calls made before the script loads are kept (README, Pixel tracking).
STUB = "window.sluice = window.sluice || function () { (window.sluice.q = window.sluice.q || []).push(arguments); };"
Event = dict[str, Any]  # one event as sent by the script or as stored: event, url, properties…


def document(body: str = "", head: str = "", title: str = "Shop") -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>{head}</head>"
        f"<body>{body}</body></html>"
    )


def wait_for(probe: Callable[[], Any], done: Callable[[Any], bool], timeout: float, what: str) -> Any:
    """probe() until done(its value), or fail showing the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            shown = "\n".join(map(repr, value)) if isinstance(value, list) else repr(value)
            raise AssertionError(f"waited {timeout} s for {what}; there was:\n{shown}")
        time.sleep(POLL_SECONDS)


@dataclass
class Site:
    host: str
    api_host: str
    api_url: str
    workspace_id: int
    domain_id: int
    auth: dict[str, str]
    proxy: Proxy
    query: Callable[..., list[tuple]]
    since: int  # the proxy's record before the test began

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}{path}"

    def script(self, **attributes: str | bool) -> str:
        """The tag as a site embeds it; attributes by name without `data-` (underscores become
        dashes), True for a bare attribute."""
        src = attributes.pop("src", f"http://{self.api_host}/pixel.js")
        parts = [f'src="{html.escape(str(src))}"']
        for name, value in attributes.items():
            name = "data-" + name.replace("_", "-")
            parts.append(name if value is True else f'{name}="{html.escape(str(value))}"')
        return f"<script defer {' '.join(parts)}></script>"

    def page(self, path: str, text: str) -> str:
        """Serves text at path on the site; its URL."""
        self.proxy.pages[self.host][path] = text
        return self.url(path)

    def configure(self, **settings: Any) -> None:
        r = httpx.patch(
            f"{self.api_url}/api/v1/pixel/domains/{self.domain_id}", headers=self.auth, json=settings, timeout=30
        )
        assert r.status_code == 200, r.text

    # -- what the browser sent ----------------------------------------------------------------

    def requests(self, where: Callable[[Seen], bool] = lambda _seen: True) -> list[Seen]:
        """What the browser requested since the site was made (tests run one at a time)."""
        return self.proxy.requests(where, since=self.since)

    def track_requests(self) -> list[Seen]:
        """Track requests carrying events of this site (the sentinel's included)."""
        return self.requests(lambda s: s.route in TRACK_ROUTES and bool(self.events_of(s)))

    def events_of(self, seen: Seen) -> list[Event]:
        """The events of a track request that are this site's (by their page URL)."""
        try:
            body = orjson.loads(seen.body)
        except orjson.JSONDecodeError:
            return []
        events = body if isinstance(body, list) else [body]
        return [e for e in events if isinstance(e, dict) and urlsplit(str(e.get("url", ""))).hostname == self.host]

    def sent(self) -> list[Event]:
        """Every event the browser sent for this site's pages, in the order the proxy received them
        (the sentinel page's left out)."""
        events = [event for seen in self.track_requests() for event in self.events_of(seen)]
        return [event for event in events if urlsplit(event["url"]).path != SENTINEL_PATH]

    def wait_sent(self, done: Callable[[list[Event]], bool], what: str) -> list[Event]:
        return wait_for(self.sent, done, SEND_TIMEOUT, f"the browser to send {what}")

    # -- what was stored ----------------------------------------------------------------------

    def rows(self) -> list[Event]:
        return [
            {"event": e, "url": u, "path": p, "referrer": r, "properties": orjson.loads(props)}
            for e, u, p, r, props in self.query(ROWS, {"ws": self.workspace_id})
        ]

    def whole_rows(self) -> list[tuple]:
        return self.query(WHOLE_ROWS, {"ws": self.workspace_id})

    def wait_rows(self, done: Callable[[list[Event]], bool], what: str) -> list[Event]:
        """The site's rows (sentinels left out) once done(rows) holds."""
        try:
            rows = wait_for(self.rows, lambda rows: done(without_sentinels(rows)), STORE_TIMEOUT, f"{what} stored")
        except AssertionError as exc:
            answers = [(seen.status, seen.answer, self.events_of(seen)) for seen in self.track_requests()]
            raise AssertionError(f"{exc}\nthe browser sent (status, answer, events):\n{answers}") from None
        return without_sentinels(rows)

    def drain(self, driver) -> list[Event]:
        """Leaves the current page and returns every row stored for the site once whatever the
        browser sent before has landed (sentinel rows left out)."""
        self.page(
            SENTINEL_PATH,
            document(f"<script>{STUB}sluice('event', 'sentinel');</script>{self.script(allow_local=True)}"),
        )
        driver.get(self.url(SENTINEL_PATH))
        wait_for(
            lambda: self.requests(lambda s: s.route in TRACK_ROUTES and b'"sentinel"' in s.body and s.status > 0),
            bool,
            SEND_TIMEOUT,
            "the sentinel page's event to be sent and answered",
        )
        self.proxy.wait_idle()
        r = httpx.post(
            f"{self.api_url}/api/v1/pixel/track",
            json={"event": "drained", "url": self.url(SENTINEL_PATH)},
            headers={"User-Agent": USER_AGENT},
            timeout=30,
        )
        assert r.status_code == 200 and r.json() == {"tracked": True}, r.text
        stored = wait_for(self.rows, lambda rows: any(r["event"] == "drained" for r in rows), STORE_TIMEOUT, "drain")
        return without_sentinels(stored)


def without_sentinels(rows: list[Event]) -> list[Event]:
    return [row for row in rows if row["path"] != SENTINEL_PATH]


def named(rows: list[Event], event: str) -> list[Event]:
    return [row for row in rows if row["event"] == event]


def script_errors(entries: list[dict], script_url: str) -> list[dict]:
    """The console entries (driver.get_log("browser")) the tracking script is to blame for: uncaught
    exceptions (the page's own or the script's: either means the page was disturbed) and anything
    logged from the script's own code (an entry names its source URL first). Chromium's own reports
    are not the script's: a failed request ("Failed to load resource: net::ERR_…"), a CORS refusal of
    an error answer, a Content-Security-Policy refusal to load the script, each against the page."""
    return [
        entry
        for entry in entries
        if "Uncaught" in entry["message"] or entry["message"].split(" ", 1)[0].startswith(script_url)
    ]
