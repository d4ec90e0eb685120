"""Request transport over raw sockets: malformed and abandoned bodies, slow bodies and slow headers.

A server of its own, started as production starts it (`python -m app serve`), with short timeouts
and a debug log this module reads.
"""

import contextlib
import socket
import time

import orjson
import pytest

from tests.conftest import app_serve

BODY_TIMEOUT_SECONDS = 2
HEADER_TIMEOUT_SECONDS = 1
# Far past both timeouts: a server that does not enforce them fails the test on this instead.
SOCKET_TIMEOUT_SECONDS = 20
ABANDONED = 50
INCOMPLETE_LINE = "request body incomplete"


@pytest.fixture(scope="module")
def server(server_env, tmp_path_factory):
    """(port, log path) of `python -m app serve` with short body and header timeouts."""
    env = {
        **server_env,
        "SLUICE_WORKERS": "1",
        "SLUICE_LOG_LEVEL": "debug",
        "SLUICE_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT_SECONDS),
        "SLUICE_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT_SECONDS),
    }
    with app_serve(env, tmp_path_factory.mktemp("transport")) as api:
        yield int(api.url.rsplit(":", 1)[1]), api.log


def request_head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: sluice.test", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes, bool]:
    """(status, headers, body, whether the server closed the connection after it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed without a response (got {data!r})"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of the response body"
        body += chunk
    closed = sock.recv(1) == b"" if headers.get("connection") == "close" else False
    return int(status_line.split()[1]), headers, body, closed


def exchange(port: int, data: bytes):
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_SECONDS) as sock:
        sock.sendall(data)
        return read_response(sock)


class Log:
    """The server's log from a point on: what this test made it write."""

    def __init__(self, path):
        self.path, self.start = path, path.stat().st_size

    def text(self) -> str:
        with open(self.path, "rb") as f:
            f.seek(self.start)
            return f.read().decode(errors="replace")

    def assert_no_server_error(self) -> None:
        text = self.text()
        # Text lines or JSON lines (SLUICE_LOG_FORMAT=auto writes JSON to a file).
        errors = (" ERROR ", "[ERROR]", '"level":"ERROR"')
        assert "Traceback" not in text and not any(e in text for e in errors), text[-3000:]


def wait_for(condition, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("path", ["/api/v1/pixel/track", "/api/v1/workspaces"])
def test_malformed_chunked_body_gets_400_envelope_not_500(server, tenant, path):
    port, log_path = server
    _, auth = tenant
    log = Log(log_path)
    head = request_head(path, {**auth, "Transfer-Encoding": "chunked"})
    status, headers, body, _ = exchange(port, head + b"zz\r\nabc\r\n0\r\n\r\n")
    assert status == 400
    assert orjson.loads(body) == {
        "error": "bad_request",
        "message": "The request body ended early or its chunked encoding was malformed.",
    }
    assert headers["x-request-id"].startswith("req_")
    wait_for(lambda: INCOMPLETE_LINE in log.text() or "unhandled error" in log.text(), "the server to log the request")
    log.assert_no_server_error()


def test_clients_leaving_mid_body_are_not_server_errors(server):
    """Each client declares 100 bytes, sends 20 and goes away: no traceback, no ERROR, per request."""
    port, log_path = server
    log = Log(log_path)
    head = request_head("/api/v1/pixel/track", {"Content-Length": "100"})
    for _ in range(ABANDONED):
        with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_SECONDS) as sock:
            sock.sendall(head + b'{"event": "pageview"')
    # Every abandoned request leaves one line, a debug line now and an error with its traceback before.
    handled = lambda: log.text().count(INCOMPLETE_LINE) + log.text().count("unhandled error")  # noqa: E731
    wait_for(lambda: handled() >= ABANDONED, f"the server to handle {ABANDONED} abandoned requests")
    log.assert_no_server_error()
    status, _, body, _ = exchange(port, b"GET /healthz HTTP/1.1\r\nHost: sluice.test\r\n\r\n")
    assert status == 200 and orjson.loads(body) == {"status": "ok"}


@pytest.mark.parametrize("path", ["/api/v1/pixel/track", "/api/v1/workspaces"])
def test_stalled_body_gets_408_and_the_connection_is_closed(server, tenant, path):
    port, log_path = server
    _, auth = tenant
    log = Log(log_path)
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_SECONDS) as sock:
        sock.sendall(request_head(path, {**auth, "Content-Length": "100"}) + b'{"name": "stalled"')
        status, headers, body, closed = read_response(sock)
    assert status == 408
    assert orjson.loads(body) == {
        "error": "request_timeout",
        "message": f"The request body did not arrive within {BODY_TIMEOUT_SECONDS} seconds.",
    }
    assert headers["connection"] == "close" and closed
    log.assert_no_server_error()


def test_stalled_headers_are_dropped_after_the_header_timeout(server):
    port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_SECONDS) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: sluice.test\r\n")  # no blank line: headers never end
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(65536) == b""  # closed by the server, with nothing answered
