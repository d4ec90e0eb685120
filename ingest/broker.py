"""Is the Kafka cluster there? A real metadata round trip, used by /readyz."""

import asyncio

from aiokafka.client import AIOKafkaClient


async def kafka_ready(bootstrap_servers: str, timeout: float) -> bool:
    client = AIOKafkaClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
        return True
    except Exception:  # noqa: BLE001 - any failure means "not ready", reported by name
        return False
    finally:
        await client.close()
