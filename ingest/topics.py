"""Ingest set-up: create the Kafka topics events go to, if they are missing.

Called by the producer when it connects and by the ingest worker at start. Idempotent: topics
that exist are left as they are (their partition count included).
"""

import asyncio

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from storage.errors import Unavailable

# Three copies where the cluster has three brokers (survives one loss with min.insync.replicas=2),
# fewer on a local single-node cluster.
MAX_REPLICATION = 3


async def ensure_topics(
    bootstrap_servers: str, names, partitions: int, *, replication_factor: int | None = None, timeout: float = 10.0
) -> list[str]:
    """The topics it created; raises Unavailable("kafka") if Kafka cannot be reached in time."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout * 1000))
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            missing = sorted(set(names) - set(await admin.list_topics()))
            if missing:
                await _create(admin, missing, partitions, replication_factor)
            return missing
    except TimeoutError as exc:
        raise Unavailable("kafka", f"no answer from {bootstrap_servers} within {timeout:g} s") from exc
    except Unavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - aiokafka raises several unrelated types for "unreachable"
        raise Unavailable("kafka", f"{bootstrap_servers}: {exc!r}") from exc
    finally:
        await admin.close()


async def _create(admin: AIOKafkaAdminClient, names: list[str], partitions: int, replication: int | None) -> None:
    if replication is None:
        brokers = (await admin.describe_cluster())["brokers"]
        replication = min(MAX_REPLICATION, len(brokers))
    response = await admin.create_topics([NewTopic(name, partitions, replication) for name in names])
    for topic, code, *_message in response.topic_errors:
        error = for_code(code)
        if code and error is not TopicAlreadyExistsError:  # another process created it first: fine
            raise Unavailable("kafka", f"cannot create topic {topic}: {error.__name__}")
