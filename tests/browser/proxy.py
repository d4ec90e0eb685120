"""The browser's whole network: a threaded HTTP/1.1 forward proxy that Chromium sends every request
to (absolute-form `GET http://host/path`), so pages and the API sit on real-looking origins with
default ports, without root, port 80 or Chromium's rules for public pages calling 127.0.0.1.

- a site's host (`shop-….example`): the pages its test defined, `/other` to navigate away to,
  `/files/…` as attachments (downloads), and `/x/…` forwarded to the API (first-party serving);
- the API's host (`sluice-….example`): everything forwarded to the real API server with httpx;
- `elsewhere.example`: a small page (outbound links land there; `/link?to=URL` links to URL);
- a host marked down: the connection is closed unanswered (a closed port) or answered 502 (with
  CORS, so that a page's script reads the 502 itself);
- anything else (Chromium's own background calls, https tunnels): refused.

Every request is recorded (method, host, path, headers, body, and the answer's status and body),
so a test can assert what the browser sent and what the API said.
"""

import html
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx

ELSEWHERE = "elsewhere.example"
FIRST_PARTY_PREFIX = "/x/"
# Not passed on either way: they describe one connection, not the request (RFC 9110 §7.6.1), and
# bodies are passed on decoded (httpx decodes what the API compresses).
HOP_BY_HOP = {
    "connection",
    "proxy-connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "host",
    "content-length",
    "accept-encoding",
    "content-encoding",
}
OTHER_PAGE = "<!doctype html><html><head><title>Other</title></head><body><p id='other'>other</p></body></html>"


@dataclass
class Seen:
    """One request the browser made, and how it was answered (status 0: not yet, or never)."""

    method: str
    host: str
    path: str  # with the query
    headers: dict[str, str]  # names lowercase
    body: bytes
    status: int = 0
    answer: bytes = b""
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def route(self) -> str:
        return self.path.split("?", 1)[0]


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def page_answer(text: str) -> Answer:
    return Answer(200, "text/html; charset=utf-8", text.encode())


class Proxy:
    """Routes by host; sites and down hosts are added and removed by tests while it runs."""

    def __init__(self, api_url: str, api_host: str):
        self.api_url = api_url.rstrip("/")
        self.api_host = api_host
        self.pages: dict[str, dict[str, str]] = {}  # site host → path → HTML
        self.down: dict[str, str] = {}  # host → "refused" | "bad_gateway"
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.client = httpx.Client(timeout=30, follow_redirects=False)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="browser-proxy", daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "Proxy":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.client.close()

    # -- what the tests see --------------------------------------------------------------------

    def mark(self) -> int:
        """Where the record stands now: requests(since=mark()) are the ones made after it."""
        with self.lock:
            return len(self.seen)

    def requests(self, where: Callable[[Seen], bool] = lambda _seen: True, since: int = 0) -> list[Seen]:
        with self.lock:
            return [seen for seen in self.seen[since:] if where(seen)]

    def wait_idle(self, timeout: float = 60) -> None:
        """Until every request seen so far has been answered (or dropped)."""
        deadline = time.monotonic() + timeout
        for seen in self.requests():
            assert seen.done.wait(max(0.0, deadline - time.monotonic())), f"still answering {seen.host}{seen.path}"

    # -- routing -------------------------------------------------------------------------------

    def answer(self, seen: Seen) -> Answer | None:
        """The answer to one request; None: close the connection unanswered."""
        if seen.host == self.api_host:
            return self.forward(seen, seen.path)
        if seen.host in self.pages:
            return self.site_answer(seen)
        if seen.host == ELSEWHERE:
            return self.elsewhere_answer(seen)
        if self.down.get(seen.host) == "bad_gateway":  # readable by the page: the script sees a 502
            return Answer(502, "text/plain", b"bad gateway", {"Access-Control-Allow-Origin": "*"})
        if seen.host in self.down:
            return None
        return Answer(502, "text/plain", b"no such host in this test")

    def site_answer(self, seen: Seen) -> Answer:
        route = seen.route
        if route.startswith(FIRST_PARTY_PREFIX):
            return self.forward(seen, seen.path)
        if route.startswith("/files/"):
            name = route.rsplit("/", 1)[-1]
            disposition = {"Content-Disposition": f'attachment; filename="{name}"'}
            return Answer(200, "application/octet-stream", b"file body", disposition)
        if route == "/other":
            return page_answer(OTHER_PAGE)
        text = self.pages[seen.host].get(route)
        if text is None:
            return Answer(404, "text/plain", b"no such page")
        return page_answer(text)

    def elsewhere_answer(self, seen: Seen) -> Answer:
        query = parse_qs(urlsplit(seen.path).query)
        link = ""
        if "to" in query:
            link = f'<a id="go" href="{html.escape(query["to"][0])}">go</a>'
        return page_answer(f"<!doctype html><html><head><title>Elsewhere</title></head><body>{link}</body></html>")

    def forward(self, seen: Seen, path: str) -> Answer:
        headers = {name: value for name, value in seen.headers.items() if name not in HOP_BY_HOP}
        headers["accept-encoding"] = "identity"
        try:
            r = self.client.request(seen.method, self.api_url + path, headers=headers, content=seen.body)
        except httpx.TransportError as exc:
            return Answer(502, "text/plain", f"API unreachable: {exc!r}".encode())
        kept = {k: v for k, v in r.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "content-type"}
        return Answer(r.status_code, r.headers.get("content-type", ""), r.content, kept)

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # noqa: A002 (the base class's name)
                pass

            def do_CONNECT(self):  # https tunnels: every test origin is plain http
                self.close_connection = True
                self.send_response(405)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def handle_one(self):
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen(
                    self.command,
                    (parts.hostname or self.headers.get("Host", "")).lower(),
                    parts.path + (f"?{parts.query}" if parts.query else ""),
                    {name.lower(): value for name, value in self.headers.items()},
                    self.rfile.read(length) if length else b"",
                )
                with proxy.lock:
                    proxy.seen.append(seen)
                try:
                    answer = proxy.answer(seen)
                    if answer is None:
                        self.close_connection = True
                        return
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    if answer.content_type:
                        self.send_header("Content-Type", answer.content_type)
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(answer.body)
                    seen.status, seen.answer = answer.status, answer.body
                finally:
                    seen.done.set()

            do_GET = do_POST = do_HEAD = do_OPTIONS = do_PUT = do_PATCH = do_DELETE = handle_one

        return Handler
