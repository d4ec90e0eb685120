"""The Sink seam: both implementations offer exactly what the protocol declares, and the in-memory
one keeps or refuses records as the durable producer would answer (its Kafka behaviour is
tested against Kafka in tests/integration/ingest/test_producer.py)."""

import inspect

import pytest

from ingest.handoff.producer import DurableProducer
from ingest.handoff.sink import Durability, InMemorySink, Sink
from ingest.handoff.spool import SpoolFull

MEMBERS = ("send", "send_many", "send_soon", "stats")


@pytest.mark.parametrize("implementation", [DurableProducer, InMemorySink])
@pytest.mark.parametrize("member", MEMBERS)
def test_each_sink_has_every_member_with_the_protocols_signature(implementation, member):
    assert Sink in implementation.__mro__
    declared, offered = getattr(Sink, member), getattr(implementation, member)
    assert offered is not declared  # implemented, not inherited from the protocol's stub
    assert inspect.signature(offered) == inspect.signature(declared)
    assert inspect.iscoroutinefunction(offered) == inspect.iscoroutinefunction(declared)


def test_the_protocol_declares_only_those_members():
    declared = {name for name, value in vars(Sink).items() if inspect.isfunction(value) and not name.startswith("_")}
    assert declared == set(MEMBERS)


def test_durability_keeps_the_values_send_has_always_returned():
    assert [d.value for d in Durability] == ["kafka", "spool"]
    assert Durability.KAFKA == "kafka" and Durability.SPOOL == "spool"


async def test_in_memory_sink_keeps_records_in_order_per_topic():
    sink = InMemorySink()
    assert await sink.send("a", b"1", b"x") is Durability.KAFKA
    assert await sink.send_many("b", [(b"1", b"y"), (b"2", b"z")]) is Durability.KAFKA
    sink.send_soon("a", b"3", b"w")
    assert sink.sent == [("a", b"1", b"x"), ("b", b"1", b"y"), ("b", b"2", b"z"), ("a", b"3", b"w")]
    assert sink.values("a") == [b"x", b"w"]
    assert sink.stats() == {"sent_memory": 4}


async def test_a_failing_in_memory_sink_raises_on_send_and_loses_send_soon_quietly():
    sink = InMemorySink(fail_with=SpoolFull())
    with pytest.raises(SpoolFull):
        await sink.send("a", b"1", b"x")
    with pytest.raises(SpoolFull):
        await sink.send_many("a", [(b"1", b"x")])
    sink.send_soon("a", b"1", b"x")  # best effort by contract: never raises
    assert sink.sent == []
