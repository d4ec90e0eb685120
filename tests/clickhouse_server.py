"""A ClickHouse server without a ClickHouse binary: the real engine (chdb) behind ClickHouse's HTTP
interface, writable, for tests of server mode (CLICKHOUSE_URL=http://…, what docker-compose runs)
and for running the whole stack in server mode on a machine with no clickhouse-server.

    python tests/clickhouse_server.py DIR [--host 127.0.0.1] [--port 0] [--database NAME]… [--user NAME:PASSWORD]

Opens the chdb directory DIR (one process at a time), creates each --database, prints the port it
listens on (a line of its own: --port 0 picks a free one) and serves until SIGTERM or Ctrl-C.
It is storage/clickhouse/http_interface.py with `writable`: clients that ask for readonly (Sluice's
readers do) get the worker's read-only sessions, the others may write, as on a server
(DDL, SELECT, INSERT … FORMAT X with the rows in the body). With --user, every client must give
those credentials (as in the URL: http://NAME:PASSWORD@host:port/NAME); without, any local client.
"""

import argparse
import asyncio
import contextlib
import hashlib
import signal
import sys

import chdb

from storage.clickhouse import http_interface
from storage.clickhouse.readers import Limits

# Sluice's inserts are batches of up to 100k rows of ~600 bytes of JSON (SLUICE_CONSUMER_BATCH_ROWS).
MAX_REQUEST_BYTES = 512 << 20
# Two workers, an API and its readers at once: a query rarely waits for a session.
SESSIONS = 4


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python tests/clickhouse_server.py", description=__doc__.split("\n\n")[0])
    p.add_argument("directory", help="the chdb directory (created if missing)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8123, help="0: any free port")
    p.add_argument("--database", action="append", default=[], help="create this database first (repeatable)")
    p.add_argument("--user", help="NAME:PASSWORD every client must give")
    return p


def create_databases(directory: str, names: list[str]) -> None:
    conn = chdb.connect(directory)
    try:
        for name in names:
            conn.query("CREATE DATABASE IF NOT EXISTS `" + name.replace("`", "\\`") + "`")
    finally:
        conn.close()


def users(credentials: str | None) -> dict[str, str]:
    if not credentials:
        return {}
    name, _, password = credentials.partition(":")
    return {name: hashlib.sha256(password.encode()).hexdigest()}


async def serve(args: argparse.Namespace) -> None:
    create_databases(args.directory, args.database)
    settings = http_interface.Settings(
        args.host,
        args.port,
        users(args.user),
        Limits(),
        SESSIONS,
        writable=True,
        max_request_bytes=MAX_REQUEST_BYTES,
    )
    interface = http_interface.HttpInterface(args.directory, settings)
    await interface.start()
    print(interface.port, flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await stopping.wait()
    finally:
        await interface.close()


def main() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(parser().parse_args()))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
