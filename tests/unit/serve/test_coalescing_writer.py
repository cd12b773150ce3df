"""limits.CoalescingWriter: a response's head and body leave in one write (issue 14)."""

from __future__ import annotations

import asyncio
from typing import Any

from webhook.serve.limits import CoalescingWriter

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n"


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.extra = {"peername": ("127.0.0.1", 1)}

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str) -> Any:
        return self.extra.get(name)


def writer_on(loop: asyncio.AbstractEventLoop) -> tuple[CoalescingWriter, FakeTransport]:
    transport = FakeTransport()
    return CoalescingWriter(transport, loop), transport  # type: ignore[arg-type]


def test_head_and_body_are_one_write() -> None:
    async def run() -> list[bytes]:
        writer, transport = writer_on(asyncio.get_running_loop())
        writer.write(HEAD)
        assert transport.writes == []
        writer.write(b"{}")
        await asyncio.sleep(0)
        return transport.writes

    assert asyncio.run(run()) == [HEAD + b"{}"]


def test_a_head_no_body_follows_is_sent_at_the_end_of_the_iteration() -> None:
    async def run() -> list[bytes]:
        writer, transport = writer_on(asyncio.get_running_loop())
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        writer.write(b"later")
        return transport.writes

    assert asyncio.run(run()) == [b"HTTP/1.1 100 Continue\r\n\r\n", b"later"]


def test_other_writes_pass_through_in_order() -> None:
    async def run() -> list[bytes]:
        writer, transport = writer_on(asyncio.get_running_loop())
        writer.write(b"5\r\nhello\r\n")
        writer.write(HEAD)
        writer.write(b"")
        writer.write(b"0\r\n\r\n")
        return transport.writes

    assert asyncio.run(run()) == [b"5\r\nhello\r\n", HEAD, b"0\r\n\r\n"]


def test_close_sends_the_held_head_first_and_a_late_flush_writes_nothing() -> None:
    async def run() -> FakeTransport:
        writer, transport = writer_on(asyncio.get_running_loop())
        writer.write(HEAD)
        writer.close()
        await asyncio.sleep(0)  # the scheduled flush finds nothing held
        return transport

    transport = asyncio.run(run())
    assert transport.writes == [HEAD] and transport.closed


def test_a_head_held_when_the_transport_closes_is_dropped_not_written_to_it() -> None:
    async def run() -> FakeTransport:
        writer, transport = writer_on(asyncio.get_running_loop())
        writer.write(HEAD)
        transport.close()  # the protocol ended the connection (a limit, a shutdown)
        await asyncio.sleep(0)
        return transport

    assert asyncio.run(run()).writes == []


def test_everything_else_is_the_transports() -> None:
    async def run() -> None:
        writer, _ = writer_on(asyncio.get_running_loop())
        assert writer.get_extra_info("peername") == ("127.0.0.1", 1)
        assert not writer.is_closing()

    asyncio.run(run())
