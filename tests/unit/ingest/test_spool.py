"""The on-disk spool (ingest/handoff/spool.py): group commit, ordered replay, torn tails, bounds, sharing."""

import asyncio
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.handoff.spool import HEADER, Spool, SpoolFull, adopt_orphans, claim, encode_record

ROOT = Path(__file__).resolve().parents[3]


def run(coro):
    return asyncio.run(coro)


async def drain(spool: Spool, per_read: int = 1000) -> list[bytes]:
    values = []
    while chunk := await spool.read(per_read):
        values += [record.value for record in chunk.records]
        await spool.commit(chunk)
    return values


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.log"))


def test_appends_issued_together_share_one_write_and_one_fsync(tmp_path):
    async def scenario():
        spool = Spool(tmp_path, 1 << 20)
        positions = await asyncio.gather(*(spool.append("t", b"k", b"%d" % i) for i in range(200)))
        assert spool.fsyncs == 1
        assert positions == sorted(positions) and len(set(positions)) == 200
        assert await drain(spool) == [b"%d" % i for i in range(200)]
        await spool.close()

    run(scenario())


def test_records_come_back_with_topic_key_and_value(tmp_path):
    async def scenario():
        spool = Spool(tmp_path, 1 << 20)
        await spool.append_many("pixel", [(b"7", b"a"), (None, b"b"), (b"", b"")])
        chunk = await spool.read()
        assert [(r.topic, r.key, r.value) for r in chunk.records] == [
            ("pixel", b"7", b"a"),
            ("pixel", None, b"b"),
            ("pixel", b"", b""),
        ]
        await spool.close()

    run(scenario())


def test_replayed_segments_are_deleted_and_the_spool_is_idle(tmp_path):
    async def scenario():
        spool = Spool(tmp_path, 1 << 20, segment_bytes=100)
        for _ in range(20):
            await spool.append("t", b"k", b"x" * 30)
        assert len(segments(tmp_path)) > 5
        assert len(await drain(spool)) == 20
        assert segments(tmp_path) == [] and spool.idle() and spool.disk_bytes == 0 and spool.pending == 0
        await spool.append("t", b"k", b"after")
        assert await drain(spool) == [b"after"]
        await spool.close()

    run(scenario())


def test_a_torn_tail_is_ignored_and_later_appends_still_replay(tmp_path):
    async def scenario():
        spool = Spool(tmp_path, 1 << 20)
        await spool.append_many("t", [(b"k", b"one"), (b"k", b"two")])
        await spool.close()
        last = segments(tmp_path)[-1]
        frame = encode_record("t", b"k", b"three")
        with open(last, "ab") as file:
            file.write(frame[:-2])  # the crash came mid-write
        reopened = Spool(tmp_path, 1 << 20)
        assert reopened.pending == 2
        await reopened.append("t", b"k", b"four")
        assert await drain(reopened) == [b"one", b"two", b"four"]
        await reopened.close()

    run(scenario())


def test_a_frame_with_a_bad_checksum_ends_the_segment(tmp_path):
    async def scenario():
        spool = Spool(tmp_path, 1 << 20)
        await spool.append_many("t", [(b"k", b"good"), (b"k", b"flipped")])
        await spool.close()
        last = segments(tmp_path)[-1]
        data = bytearray(last.read_bytes())
        data[-1] ^= 0xFF
        last.write_bytes(bytes(data))
        reopened = Spool(tmp_path, 1 << 20)
        assert await drain(reopened) == [b"good"]
        await reopened.close()

    run(scenario())


def test_a_full_spool_refuses_then_accepts_once_replayed(tmp_path):
    async def scenario():
        spool = Spool(tmp_path, 1000, segment_bytes=200)
        accepted = 0
        with pytest.raises(SpoolFull):
            while True:
                await spool.append("t", b"k", b"v" * 50)
                accepted += 1
        assert accepted * (50 + HEADER.size + 8) <= 1000
        assert spool.disk_bytes <= 1000
        assert len(await drain(spool)) == accepted
        await spool.append("t", b"k", b"v" * 50)
        await spool.close()

    run(scenario())


def test_a_full_spool_refuses_a_whole_batch_at_once(tmp_path):
    async def scenario():
        spool = Spool(tmp_path, 300)
        with pytest.raises(SpoolFull):
            await spool.append_many("t", [(b"k", b"v" * 50)] * 10)
        assert spool.pending == 0 and segments(tmp_path) == []
        await spool.close()

    run(scenario())


def test_a_chunk_read_but_not_committed_is_read_again_after_a_crash(tmp_path):
    async def scenario():
        spool = Spool(tmp_path, 1 << 20)
        await spool.append_many("t", [(b"k", b"%d" % i) for i in range(10)])
        first = await spool.read(4)
        await spool.commit(first)
        await spool.read(4)  # sent, then the process died before the checkpoint
        await spool.close()
        reopened = Spool(tmp_path, 1 << 20)
        assert reopened.pending == 6
        assert await drain(reopened) == [b"%d" % i for i in range(4, 10)]
        await reopened.close()

    run(scenario())


def test_a_record_marked_done_is_not_replayed_even_after_reopen(tmp_path):
    async def scenario():
        spool = Spool(tmp_path, 1 << 20)
        positions = await spool.append_many("t", [(b"k", b"a"), (b"k", b"b"), (b"k", b"c")])
        spool.mark_done(positions[1])
        await spool.close()  # the mark is written before close returns
        reopened = Spool(tmp_path, 1 << 20)
        assert await drain(reopened) == [b"a", b"c"]
        await reopened.close()

    run(scenario())


def test_rewind_reads_again_from_the_checkpoint(tmp_path):
    async def scenario():
        spool = Spool(tmp_path, 1 << 20)
        await spool.append_many("t", [(b"k", b"a"), (b"k", b"b")])
        await spool.read(1)
        spool.rewind()
        assert await drain(spool) == [b"a", b"b"]
        await spool.close()

    run(scenario())


CHILD = textwrap.dedent("""
    import asyncio, sys
    from ingest.handoff.spool import claim
    async def main():
        spool = claim(sys.argv[1], 1 << 20)
        await spool.append_many("t", [(b"k", b"from-child-%d" % i) for i in range(5)])
        print(spool.path, flush=True)
        sys.stdin.readline()  # stays alive (holding its lock) until told
    asyncio.run(main())
""")


def test_a_live_owner_keeps_its_directory_and_a_dead_owners_is_adopted(tmp_path):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        child_dir = Path(child.stdout.readline().strip())

        async def scenario():
            mine = claim(tmp_path, 1 << 20)
            assert adopt_orphans(tmp_path, 1 << 20) == []  # the child lives, and our own is ours
            child.kill()
            child.wait(10)
            adopted = adopt_orphans(tmp_path, 1 << 20)
            assert [spool.path for spool in adopted] == [child_dir]
            assert await drain(adopted[0]) == [b"from-child-%d" % i for i in range(5)]
            await adopted[0].close(remove=True)
            assert not child_dir.exists()
            await mine.close(remove=True)
            assert list(tmp_path.iterdir()) == []

        run(scenario())
    finally:
        child.kill()
        child.wait(10)


def test_two_claims_in_one_directory_do_not_adopt_each_other(tmp_path):
    async def scenario():
        first, second = claim(tmp_path, 1 << 20), claim(tmp_path, 1 << 20)
        assert first.path != second.path
        assert adopt_orphans(tmp_path, 1 << 20) == []
        await first.append("t", b"k", b"left behind")
        await first.close()
        adopted = adopt_orphans(tmp_path, 1 << 20)
        assert await drain(adopted[0]) == [b"left behind"]
        for spool in (adopted[0], second):
            await spool.close(remove=True)

    run(scenario())


operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("append"),
            st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=4), min_size=1, max_size=3),
        ),
        st.tuples(st.just("replay"), st.integers(1, 7)),
        st.tuples(st.just("crash_during_replay"), st.integers(1, 7)),
        st.tuples(st.just("reopen"), st.none()),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations)
def test_whatever_was_acknowledged_is_replayed_exactly_once_in_order(ops):
    async def scenario(path: Path):
        acknowledged, replayed = [], []
        spool = Spool(path, 1 << 20, segment_bytes=120)
        for op, arg in ops:
            if op == "append":  # concurrent calls: one group commit
                await asyncio.gather(*(spool.append_many("t", [(b"k", v) for v in batch]) for batch in arg))
                acknowledged += [v for batch in arg for v in batch]
            elif op == "replay" and (chunk := await spool.read(arg)):
                replayed += [record.value for record in chunk.records]
                await spool.commit(chunk)
            elif op in ("crash_during_replay", "reopen"):
                if op == "crash_during_replay":
                    await spool.read(arg)
                await spool.close()
                spool = Spool(path, 1 << 20, segment_bytes=120)
                assert spool.pending == len(acknowledged) - len(replayed)
        replayed += await drain(spool, per_read=3)
        await spool.close()
        assert replayed == acknowledged
        assert segments(path) == []

    with tempfile.TemporaryDirectory() as directory:
        run(scenario(Path(directory)))
