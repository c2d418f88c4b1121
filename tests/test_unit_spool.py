"""The spool's files: what a restart finds after a crash (real files, gevent greenlets, no servers)."""

from __future__ import annotations

import os
from pathlib import Path

import gevent

from esproxy.core.bean import Bean
from esproxy.proxy.spool import Spool, SpoolFull


def _bean(i: int) -> Bean:
    return Bean("PUT", f"/i/_doc/{i}", b'{"n":%d}' % i, index="i")


def test_a_restart_ships_what_kafka_did_not_take_and_returns_open_intents(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000)
    assert spool.open() == []
    for i in range(3):
        spool.done(spool.intent("PUT", f"/i/_doc/{i}", b""), [_bean(i)])
    in_flight = spool.intent("PUT", "/i/_doc/9", b"")  # forwarded, then the process dies
    assert [b.requestUri for _, b in spool.take(10, timeout=0)] == ["/i/_doc/0", "/i/_doc/1", "/i/_doc/2"]
    spool.ack(1)  # Kafka took the first one
    segment = next(tmp_path.glob("*.log"))
    with open(segment, "ab") as f:
        f.write(b"\x00\x00\x01\x00torn")  # a record cut short by the crash
    # no close(): as after SIGKILL

    again = Spool(tmp_path, max_bytes=10_000)
    intents = again.open()
    assert [i["id"] for i in intents] == [in_flight] and intents[0]["uri"] == "/i/_doc/9"
    assert [b.requestUri for _, b in again.take(10, timeout=0)] == ["/i/_doc/1", "/i/_doc/2"]
    assert segment.read_bytes()[-4:] != b"torn"
    again.done(in_flight, [])  # settled: nothing to replay
    again.ack(2)
    again.close()
    third = Spool(tmp_path, max_bytes=10_000)
    assert third.open() == [] and third.take(10, timeout=0) == []
    third.close()


def test_full_spool_refuses_when_asked_to(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=50, block_when_full=False)
    spool.open()
    spool.done(spool.intent("PUT", "/i/_doc/1", b""), [_bean(1), _bean(2)])
    try:
        spool.check_space()
    except SpoolFull as e:
        assert "not yet taken by Kafka" in str(e)
    else:
        raise AssertionError("a spool over maxBytes accepted a write")
    spool.ack(2)
    spool.check_space()
    spool.close()


def test_shipped_segments_are_deleted_and_close_records_the_position(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1_000_000, segment_bytes=200)  # a few records per segment
    spool.open()
    for i in range(10):
        spool.done(spool.intent("PUT", f"/i/_doc/{i}", b""), [_bean(i)])
    assert len(list(tmp_path.glob("*.log"))) > 2
    spool.take(10, timeout=0)
    spool.ack(4)
    spool.ack(6)  # within a second of the first: `position` may lag until close()
    left = sorted(int(p.stem) for p in tmp_path.glob("*.log"))
    assert left[0] >= left[-1] - 1, left  # the last shipped bean's segment and the one written now
    spool.close()
    again = Spool(tmp_path, max_bytes=1_000_000)
    assert again.open() == [] and again.take(10, timeout=0) == []
    again.close()


def _fsyncs_for_concurrent_writes(tmp_path: Path, monkeypatch, commit_delay: float, settle: int = 0) -> int:
    """Fsyncs the spool made for 20 writes in flight together, answered by "A" in three waves 50 ms apart
    (after settling ``settle`` intents that an earlier run left open)."""
    if settle:
        crashed = Spool(tmp_path, max_bytes=1_000_000)
        crashed.open()
        for i in range(settle):
            crashed.intent("PUT", f"/i/_doc/old{i}", b"")
        crashed._committer.kill()  # no close(): as after SIGKILL
    spool = Spool(tmp_path, max_bytes=1_000_000, commit_delay=commit_delay)
    left = spool.open()
    assert len(left) == settle
    for intent in left:  # as the proxy settles them: done() with what A holds
        spool.done(intent["id"], [])
    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd)))

    def write(i: int) -> None:
        intent = spool.intent("PUT", f"/i/_doc/{i}", b"")
        gevent.sleep(0.01 + (i % 3) * 0.05)  # the primary's answer
        spool.done(intent, [_bean(i)])

    gevent.joinall([gevent.spawn(write, i) for i in range(20)], raise_error=True)
    assert sorted(b.requestUri for _, b in spool.take(50, timeout=0)) == sorted(f"/i/_doc/{i}" for i in range(20))
    spool.close()
    return len(calls)


def test_concurrent_writes_share_fsyncs_when_commits_wait_for_each_other(tmp_path: Path, monkeypatch) -> None:
    undelayed = _fsyncs_for_concurrent_writes(tmp_path / "0", monkeypatch, 0.0)
    delayed = _fsyncs_for_concurrent_writes(tmp_path / "1", monkeypatch, 0.2)
    # intents in one commit; then the answers: a commit per wave, or one commit that waited for all
    assert delayed == 2 and undelayed == 4, (delayed, undelayed)
    # Intents an earlier run left open and this one settled do not count as writes in flight.
    assert _fsyncs_for_concurrent_writes(tmp_path / "2", monkeypatch, 0.2, settle=30) == 2


def test_a_lone_writer_does_not_wait_for_the_commit_delay(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000, commit_delay=5.0)
    spool.open()
    with gevent.Timeout(2.5):  # half the delay: a wait would raise here
        spool.done(spool.intent("PUT", "/i/_doc/1", b""), [_bean(1)])
    spool.close()


def test_open_intents_keep_what_settling_needs(tmp_path: Path) -> None:
    """A restart hands back each open intent with its request, when it was sent, and its body when
    settling needs one (a `_bulk` names its documents there, an index-level write is replayed whole)."""
    import time

    spool = Spool(tmp_path, max_bytes=10_000)
    spool.open()
    before = time.time()
    spool.intent("PUT", "/i/_doc/1", b"")  # the proxy passes no body for a single-document write
    spool.intent("PUT", "/i", b'{"mappings":{"properties":{"n":{"type":"long"}}}}')
    spool.intent("POST", "/_bulk", b'{"index":{"_index":"i","_id":"2"}}\n{"n":2}\n')
    spool.close()
    intents = Spool(tmp_path, max_bytes=10_000).open()
    assert [(i["method"], i["uri"], i.get("body")) for i in intents] == [
        ("PUT", "/i/_doc/1", None),
        ("PUT", "/i", '{"mappings":{"properties":{"n":{"type":"long"}}}}'),
        ("POST", "/_bulk", '{"index":{"_index":"i","_id":"2"}}\n{"n":2}\n'),
    ]
    assert all(before - 1 <= i["time"] <= time.time() + 1 for i in intents)


def test_an_append_the_disk_cut_short_leaves_no_torn_record_behind(tmp_path: Path, monkeypatch) -> None:
    """A full disk (chaos seed 7, fill-spool): writev(2) wrote part of a group commit, then ENOSPC. That part is
    cut off, so the records appended once the disk has room follow the last whole one and a restart reads them
    (a torn record inside the segment would end its reading there, or cut the file after it)."""
    import errno

    from esproxy.proxy import spool as spool_module

    spool = Spool(tmp_path, max_bytes=100_000)
    spool.open()
    spool.done(spool.intent("PUT", "/i/_doc/0", b""), [_bean(0)])
    real_write_all = spool_module._write_all

    def disk_full(fd: int, buffers: list[bytes]) -> None:
        data = b"".join(buffers)
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool_module, "_write_all", disk_full)
    try:
        spool.intent("PUT", "/i/_doc/1", b"")
    except OSError as e:
        assert e.errno == errno.ENOSPC
    else:
        raise AssertionError("the append did not fail")
    monkeypatch.setattr(spool_module, "_write_all", real_write_all)
    spool.done(spool.intent("PUT", "/i/_doc/2", b""), [_bean(2)])
    assert [b.requestUri for _, b in spool.take(10, timeout=0)] == ["/i/_doc/0", "/i/_doc/2"]
    # no close(): as after SIGKILL
    again = Spool(tmp_path, max_bytes=100_000)
    assert again.open() == []  # intent 1 never made it to disk whole; intent 2 is closed
    assert [b.requestUri for _, b in again.take(10, timeout=0)] == ["/i/_doc/0", "/i/_doc/2"]
    again.close()


def test_a_position_the_disk_has_no_room_for_does_not_stop_the_shipping(tmp_path: Path, monkeypatch) -> None:
    """A full disk (chaos seed 7): the shipped position cannot be written. Shipping goes on (it killed the
    shipper: nothing reached Kafka until a restart) and the position is written once the disk has room."""
    import errno
    import json

    spool = Spool(tmp_path, max_bytes=100_000)
    spool.open()
    for i in range(3):
        spool.done(spool.intent("PUT", f"/i/_doc/{i}", b""), [_bean(i)])
    real = Spool._write_position
    monkeypatch.setattr(
        Spool, "_write_position", lambda self, pos: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full"))
    )
    assert len(spool.take(1, timeout=0)) == 1
    spool.ack(1)
    assert spool.take(10, timeout=0) and spool.backlog() == 2  # no exception: the shipper goes on
    spool.ack(2)
    assert spool.take(10, timeout=0.01) == []  # flushes the position: fails again, quietly
    monkeypatch.setattr(Spool, "_write_position", real)
    spool.close()  # the disk has room again: the position is written
    written = json.loads((tmp_path / "position").read_text())
    again = Spool(tmp_path, max_bytes=100_000)
    assert again.open() == [] and again.take(10, timeout=0) == [], written
    again.close()
