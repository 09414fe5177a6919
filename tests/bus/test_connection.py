"""The connection's header parsing reads every header block as nats-py's own parser does."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from bourse.bus.connection import FastHeadersClient, parse_header_lines

# Bytes that make header lines interesting: separators, every kind of whitespace nats-py
# strips or refuses in a name, non-ASCII and invalid UTF-8.
_pieces = st.sampled_from(
    [
        *(b"Nats-Msg-Id", b"a", b"Z9", b"accounts.12.0", b"-", b":", b": "),
        *(b" ", b"\t", b"\r\n", b"\r", b"\n", b"\x0b", b"\x0c", b"\x1c", b"\x1f"),
        *(b"\xc2\xa3", b"\xff", b"\xe2\x82"),
    ]
)
_blocks = st.lists(_pieces, max_size=30).map(b"".join)


@settings(max_examples=500, deadline=None)
@given(raw=_blocks)
def test_header_lines_parse_as_nats_py_parses_them(raw: bytes) -> None:
    assert parse_header_lines(raw) == NATS._parse_header_lines(raw)


@settings(max_examples=300, deadline=None)
@given(
    start=st.sampled_from([b"NATS/1.0\r\n", b"NATS/1.0 404 No Messages\r\n", b"NATS/1.0 100\r\n"]),
    raw=_blocks,
)
def test_header_blocks_and_status_lines_read_as_nats_py_reads_them(
    start: bytes, raw: bytes
) -> None:
    async def read(client: NATS, block: bytes) -> object:
        try:
            return await client._process_headers(block)
        except Exception as error:  # nats-py refuses some status lines: so must we
            return type(error)

    async def both() -> None:
        block = start + raw + b"\r\n"
        assert await read(FastHeadersClient(), block) == await read(NATS(), block)

    asyncio.run(both())


async def test_messages_keep_their_headers_and_pull_statuses_their_codes(nc: NATS) -> None:
    assert isinstance(nc, FastHeadersClient)
    received: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_message(msg: Msg) -> None:
        received.put_nowait(msg)

    await nc.subscribe("headers.test", cb=on_message)
    sent = {"Nats-Msg-Id": "accounts.7.0", "Bourse-Input-Seq": "7", "Note": "£ 1"}
    await nc.publish("headers.test", b"{}", headers=sent)
    msg = await asyncio.wait_for(received.get(), 5)
    assert msg.headers == sent and msg.data == b"{}"
    # A request nobody answers comes back as a status message, parsed by nats-py as before.
    reply = nc.new_inbox()
    await nc.subscribe(reply, cb=on_message)
    await nc.publish("nobody.listens", b"", reply=reply, headers={"X": "1"})
    status = await asyncio.wait_for(received.get(), 5)
    assert status.headers is not None and status.headers.get("Status") == "503"
