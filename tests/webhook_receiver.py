"""A real local HTTPS webhook receiver for tests and the bench: a CA and a certificate for
localhost / receiver.test / 127.0.0.1 made with `cryptography`, a threaded HTTP/1.1 server,
every request recorded, answers scripted per path (default 200 `{"received": true}`), an answer
held until the test releases it; and a bare TCP listener recording who connected to it."""

import datetime
import ipaddress
import socket
import socketserver
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NAMES = ("localhost", "receiver.test")
ADDRESSES = ("127.0.0.1", "::1")
# A held answer is given anyway after this long, so a failed test never leaves a thread hanging.
HOLD_LIMIT_SECONDS = 120


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, cert.pem, key.pem): a CA the client trusts and the server's certificate from it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Sluice test CA"))
        .issuer_name(_name("Sluice test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    sans = [x509.DNSName(n) for n in NAMES] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ADDRESSES]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@dataclass
class Answer:
    status: int = 200
    headers: dict = field(default_factory=dict)
    body: bytes = b'{"received": true}'
    # Not answered until the test sets it: "the client gave up first" without guessing durations.
    hold: threading.Event | None = None


@dataclass
class Received:
    path: str
    headers: dict
    body: bytes


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        receiver: Receiver = self.server.receiver
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        receiver.record(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        answer = receiver.answer_for(self.path)
        if answer.hold is not None:
            answer.hold.wait(HOLD_LIMIT_SECONDS)
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(answer.body)))
        self.end_headers()
        try:
            self.wfile.write(answer.body)
        except OSError:
            pass  # the client gave up (a timeout test)

    def log_message(self, *args):
        pass


class Receiver:
    def __init__(self, directory: Path):
        self.ca_path, cert, key = (str(p) for p in make_certificates(directory))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.server.receiver = self
        self.port = self.server.server_address[1]
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.scripts: dict[str, list[Answer]] = {}

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"https://{host}:{self.port}{path}"

    def script(self, path: str, *answers: Answer) -> None:
        """Answer `path` with these in turn; the last one repeats."""
        with self.lock:
            self.scripts[path] = list(answers)

    def answer_for(self, path: str) -> Answer:
        with self.lock:
            answers = self.scripts.get(path)
            if not answers:
                return Answer()
            return answers.pop(0) if len(answers) > 1 else answers[0]

    def record(self, received: Received) -> None:
        with self.lock:
            self.received.append(received)

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]

    def start(self) -> "Receiver":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Accepted(socketserver.BaseRequestHandler):
    def handle(self):
        self.server.listener.accepted(self.client_address[0])


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class Listener:
    """A bare TCP listener on 127.0.0.1 and ::1 (one port): records the peer of every connection
    it accepts, then closes it. Where a client must not connect, this shows whether it did."""

    def __init__(self):
        self.lock = threading.Lock()
        self.connections: list[str] = []
        self.servers = self._bind()
        self.port = self.servers[0].server_address[1]

    def _bind(self) -> list[_Server]:
        for _ in range(20):  # the free IPv4 port may be taken on ::1: try another
            v4 = _Server(("127.0.0.1", 0), _Accepted)
            try:
                v6 = _Server6(("::1", v4.server_address[1]), _Accepted)
            except OSError:
                v4.server_close()
                continue
            return [v4, v6]
        raise RuntimeError("no port free on both 127.0.0.1 and ::1")

    def accepted(self, peer: str) -> None:
        with self.lock:
            self.connections.append(peer)

    def seen(self) -> list[str]:
        with self.lock:
            return list(self.connections)

    def __enter__(self) -> "Listener":
        for server in self.servers:
            server.listener = self
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def listener():
    with Listener() as listening:
        yield listening


@pytest.fixture(scope="session")
def https_receiver(tmp_path_factory):
    receiver = Receiver(tmp_path_factory.mktemp("receiver")).start()
    yield receiver
    receiver.stop()
