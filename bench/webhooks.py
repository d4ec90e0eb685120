"""Webhook deliveries/s: outbox → dispatcher → signed HTTPS POSTs to a local receiver.

What it measures:

* ``raw_posts``: the ceiling: the same number of POSTs of the same body, sent by one httpx client
  through the same guarded transport at the same concurrency, with no Postgres and no signing.
* ``dispatcher``: N events (default 5,000) written to the outbox of a workspace with E endpoints
  (default 4, all `*`), so N×E deliveries; the clock runs from the dispatcher's start until every
  delivery is recorded as a success. That is fan-out + lease + sign + POST + the outcome
  transaction (attempt row, delivery, endpoint health) per delivery.

The receiver is a minimal asyncio HTTP/1.1 server with TLS (a certificate made with
`cryptography`) in a process of its own, answering 200 at once. Postgres comes from DATABASE_URL
(run under `python -m storage.local_stack run -- ...`); a fresh database is made and dropped.
Results go to bench/results/<YYYY-MM-DD>-<hostname>-webhooks.json.

    .venv/bin/python -m storage.local_stack run -- .venv/bin/python bench/webhooks.py [--events N]
        [--endpoints E] [--concurrency C] [--per-endpoint P]
"""

import argparse
import asyncio
import ipaddress
import os
import random
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import uvloop  # noqa: E402
from harness import machine_info, out_arg, save_results  # noqa: E402

from ingest.webhooks import delivery  # noqa: E402
from ingest.webhooks.dispatcher import Dispatcher  # noqa: E402
from ingest.webhooks.signing import generate_secret  # noqa: E402
from storage.config import WebhooksConfig  # noqa: E402
from storage.postgres import outbox, webhooks, workspaces  # noqa: E402
from storage.postgres.migrate import migrate  # noqa: E402
from storage.postgres.pool import create_pool  # noqa: E402
from tests.webhook_receiver import make_certificates  # noqa: E402

RESPONSE = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 17\r\n\r\n{"received":true}'
EMIT_BATCH = 500
PAYLOAD = {"id": 1, "name": "bench", "scopes": ["posts:read"], "note": "x" * 200}


async def serve_receiver(port: int, cert: str, key: str) -> None:
    """Answer every request 200 at once, keeping connections alive."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    async def handle(reader, writer):
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                writer.write(RESPONSE)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, ssl=context, backlog=1024)
    async with server:
        await server.serve_forever()


def start_receiver(workdir: Path) -> tuple[subprocess.Popen, int, str]:
    ca, cert, key = (str(p) for p in make_certificates(workdir))
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    process = subprocess.Popen([*pin, sys.executable, __file__, "--receiver", str(port), cert, key])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return process, port, ca
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the receiver did not start")


async def raw_posts(settings: WebhooksConfig, url: str, n: int, body: bytes) -> float:
    async with delivery.create_client(settings) as client:
        semaphore = asyncio.Semaphore(settings.concurrency)

        async def one():
            async with semaphore:
                (await client.post(url, content=body)).raise_for_status()

        await one()  # connect once before the clock starts
        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        return n / (time.perf_counter() - started)


async def setup(pool, port: int, endpoints: int) -> dict:
    account = await workspaces.create_account(pool, "bench")
    slug = f"bench-{uuid.uuid4().hex[:8]}"
    ws = await workspaces.create_workspace(pool, account["id"], "Bench", slug, slug, "enterprise", {})
    for n in range(endpoints):
        await webhooks.create_endpoint(pool, ws["id"], f"https://127.0.0.1:{port}/e{n}", ["*"], generate_secret())
    return ws


async def emit(pool, workspace_id: int, n: int) -> float:
    started = time.perf_counter()
    for start in range(0, n, EMIT_BATCH):
        async with pool.acquire() as conn, conn.transaction():
            for _ in range(min(EMIT_BATCH, n - start)):
                await outbox.emit(conn, "api_key.created", workspace_id, PAYLOAD)
    return n / (time.perf_counter() - started)


async def dispatch(pool, settings: WebhooksConfig, expected: int) -> dict:
    stopping = asyncio.Event()
    async with delivery.create_client(settings) as client:
        dispatcher = Dispatcher(pool, settings, client, rng=random.Random(1))
        started = time.perf_counter()
        task = asyncio.create_task(dispatcher.run(stopping))
        done = 0
        while done < expected:
            await asyncio.sleep(0.1)
            done = await pool.fetchval("SELECT count(*) FROM webhook_deliveries WHERE status = 'success'")
            if task.done():
                task.result()
        elapsed = time.perf_counter() - started
        stopping.set()
        await task
    durations = await pool.fetchval(
        "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY duration_ms) FROM webhook_attempts"
    )
    return {
        "deliveries": expected,
        "seconds": round(elapsed, 2),
        "deliveries_per_s": round(expected / elapsed, 1),
        "attempt_p50_ms": round(durations[0], 1),
        "attempt_p99_ms": round(durations[1], 1),
    }


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


async def run(args, port: int, ca: str) -> dict:
    admin = os.environ["DATABASE_URL"]
    name = f"sluice_bench_webhooks_{os.getpid()}"
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    dsn = with_database(admin, name)
    settings = WebhooksConfig(
        allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),),
        verify=ca,
        concurrency=args.concurrency,
        per_endpoint_concurrency=args.per_endpoint,
        poll_seconds=0.05,
    )
    try:
        await migrate(dsn)
        pool = await create_pool(dsn, 8)
        try:
            ws = await setup(pool, port, args.endpoints)
            emitted = await emit(pool, ws["id"], args.events)
            ceiling = await raw_posts(
                settings, f"https://127.0.0.1:{port}/raw", args.events * args.endpoints, b"x" * 400
            )
            measured = await dispatch(pool, settings, args.events * args.endpoints)
        finally:
            await pool.close()
    finally:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()
    return {
        "outbox_emit_events_per_s": round(emitted, 1),
        "raw_posts": {"posts_per_s": round(ceiling, 1)},
        "dispatcher": measured,
    }


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--receiver":
        uvloop.run(serve_receiver(int(sys.argv[2]), sys.argv[3], sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--endpoints", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=WebhooksConfig.concurrency)
    parser.add_argument("--per-endpoint", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="500 events instead of --events (make bench QUICK=1)")
    out_arg(parser, "webhooks")
    args = parser.parse_args()
    if args.quick:
        args.events = 500
    with tempfile.TemporaryDirectory() as workdir:
        receiver, port, ca = start_receiver(Path(workdir))
        try:
            figures = uvloop.run(run(args, port, ca))  # as `python -m ingest.webhooks.dispatcher` runs
        finally:
            receiver.terminate()
            receiver.wait()
    d = figures["dispatcher"]
    print(f"outbox emit:     {figures['outbox_emit_events_per_s']:>10,.0f} events/s")
    print(f"raw httpx POST:  {figures['raw_posts']['posts_per_s']:>10,.0f} posts/s (ceiling)")
    print(
        f"dispatcher:      {d['deliveries_per_s']:>10,.0f} deliveries/s ({d['deliveries']} in {d['seconds']} s; "
        f"ratio {d['deliveries_per_s'] / figures['raw_posts']['posts_per_s']:.2f}); "
        f"attempt p50 {d['attempt_p50_ms']} ms, p99 {d['attempt_p99_ms']} ms"
    )
    doc = {
        "parameters": {**vars(args), "out": str(args.out)},
        **figures,
        "machine": machine_info(["httpx", "httpcore", "asyncpg"]),
    }
    save_results(args.out, "webhooks", doc, sys.stderr)


if __name__ == "__main__":
    main()
