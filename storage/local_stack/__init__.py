"""Local service stack: Postgres, Redis, Kafka (KRaft) and embedded ClickHouse, without Docker.

Command line (from the repository root; progress goes to stderr, prefixed ``[stack]``)::

    python -m storage.local_stack up              # start what is missing, reuse what runs, leave it running
    python -m storage.local_stack run -- CMD ...  # up, run CMD with the env below, stop what `run` started
    python -m storage.local_stack down            # stop every service under .services/
    python -m storage.local_stack status          # one line per service: port, running or not
    python -m storage.local_stack env             # `export NAME=value` lines, e.g. eval "$(... env)"

Environment given to CMD (and printed by ``env``)::

    DATABASE_URL=postgresql://sluice@127.0.0.1:<port>/sluice
    REDIS_URL=redis://127.0.0.1:<port>/0
    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:<port>
    CLICKHOUSE_URL=chdb:///<repo>/.services/clickhouse

A variable that is already set is passed through and its service is not provisioned: that is how
to point Sluice at existing services.

``run`` registers its pid in ``.services/users/``. When CMD exits (Ctrl-C and SIGTERM are
forwarded to it and waited for) the services started by ``run`` invocations are stopped, but only
by the last live ``run``; so two concurrent ``make test`` share one stack. Services started by
``up`` are never stopped by ``run``. Start and stop phases hold an exclusive flock on
``.services/lock``, so two invocations never start the same service twice.

State lives in ``<repo>/.services/`` (override with ``SLUICE_SERVICES_DIR``): ``ports.json``
(free loopback ports picked on the first run and reused), ``postgres/`` (data dir), ``redis/``,
``kafka/`` (jars, server.properties, data), ``clickhouse/`` (chdb data), ``*.log``, ``*.pid``.
Missing Postgres / Redis binaries are installed with apt-get; Kafka jars come from Maven Central
through ``storage/kafka/pom.xml``.

Python API, for tests (e.g. failure tests that restart Redis or Kafka)::

    from storage import local_stack
    local_stack.stop_service("kafka")      # "postgres", "redis" or "kafka"; no-op when stopped
    local_stack.start_service("kafka")     # waits until it answers; no-op when running
    local_stack.restart_service("redis")
    local_stack.is_running("redis")        # pid file + live process + answers on its port
    local_stack.service_env()              # the four variables above, as a dict
    local_stack.ensure_up()                # `up`; returns service_env()
    local_stack.down()

Failures raise ``StackError`` whose message says what failed and what to do next.
"""

from .reporting import StackError
from .stack import down, ensure_up, is_running, restart_service, service_env, start_service, stop_service
from .state import services_dir, stack_lock

__all__ = [
    "StackError",
    "down",
    "ensure_up",
    "is_running",
    "restart_service",
    "service_env",
    "services_dir",
    "stack_lock",
    "start_service",
    "stop_service",
]
