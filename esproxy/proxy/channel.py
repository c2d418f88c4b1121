"""Messages between the pre-fork master and a worker, over a Unix socket pair.

A frame is a 4-byte big-endian length and a pickled tuple (both ends are this same program, so
pickle carries beans and exceptions as they are):

- worker -> master: ``(seq, op, args)``; ``seq`` 0 is a notice that gets no answer.
- master -> worker: ``(seq, ok, value)`` answers request ``seq`` (``value`` is the exception when
  not ``ok``); ``(0, op, args)`` is a command (profiling).
"""

from __future__ import annotations

import pickle
import socket
import struct
from typing import Any, Callable, Optional

import gevent
from gevent.event import AsyncResult, Event
from gevent.lock import Semaphore

_LENGTH = struct.Struct("!I")


class Channel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._reader = sock.makefile("rb")
        self._send_lock = Semaphore()  # greenlets' frames must not interleave

    def send(self, message: tuple) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        with self._send_lock:
            self.sock.sendall(_LENGTH.pack(len(data)) + data)

    def recv(self) -> Optional[tuple]:
        """The next message; None once the other end is gone."""
        try:
            head = self._reader.read(_LENGTH.size)
            if len(head) < _LENGTH.size:
                return None
            data = self._reader.read(_LENGTH.unpack(head)[0])
        except OSError:
            return None
        return pickle.loads(data)

    def close(self) -> None:
        # Not the buffered reader: a greenlet may be blocked in it; the shutdown ends its read.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class MasterGone(Exception):
    """The worker's master process is gone (or going): nothing can be recorded."""


class MasterClient:
    """A worker's calls to its master; each call waits for its own answer, many may be in flight."""

    def __init__(self, channel: Channel, on_command: Callable[[str, tuple], None]) -> None:
        self.channel = channel
        self.on_command = on_command
        self.closed = Event()
        self._seq = 0
        self._waiting: dict[int, AsyncResult] = {}
        self._reader = gevent.spawn(self._read)

    def call(self, op: str, *args: Any) -> Any:
        if self.closed.is_set():
            raise MasterGone("the esproxy master process is gone")
        self._seq += 1
        seq, result = self._seq, AsyncResult()
        self._waiting[seq] = result
        try:
            self.channel.send((seq, op, args))
            ok, value = result.get()
        except OSError as e:
            raise MasterGone(f"the esproxy master process is gone: {e}") from None
        finally:
            self._waiting.pop(seq, None)
        if not ok:
            raise value
        return value

    def notify(self, op: str, *args: Any) -> None:
        try:
            self.channel.send((0, op, args))
        except OSError:
            pass  # the master is gone: the reader sees it and the worker stops

    def _read(self) -> None:
        while True:
            message = self.channel.recv()
            if message is None:
                break
            seq, a, b = message
            if seq == 0:
                gevent.spawn(self.on_command, a, b)
            elif seq in self._waiting:
                self._waiting[seq].set((a, b))
        self.closed.set()
        for result in list(self._waiting.values()):
            result.set((False, MasterGone("the esproxy master process is gone")))
