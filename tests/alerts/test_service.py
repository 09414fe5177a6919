"""The alerts service over a real nats-server: requests on ALERTS, quotes on MARKET_DATA,
firings on `alerts.fired.<account>.<id>`; once per crossing, across restarts and crashes."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from bourse.alerts.service import AlertsService
from bourse.analytics import alerts
from bourse.analytics.alerts import AlertCreated, AlertDeleted, AlertFired, Condition
from bourse.bus.streams import ALERTS, MARKET_DATA, provision_stream
from bourse.model import marketdata, subjects
from tests.conftest import eventually

D = Decimal
ALICE, BOB = "alice", "bob"


@dataclass
class Market:
    """Publishes requests and quotes as the gateway and the feeds do; hears every firing."""

    nc: NATS
    js: JetStreamContext
    heard: list[tuple[str, AlertFired]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _sub: Subscription | None = None

    async def listen(self) -> None:
        async def on_message(msg: Msg) -> None:
            event = alerts.decode(msg.data)
            assert isinstance(event, AlertFired)
            self.heard.append((msg.subject, event))

        self._sub = await self.nc.subscribe(subjects.alert_filter("fired"), cb=on_message)

    async def create(
        self,
        alert_id: str,
        condition: Condition,
        price: str,
        *,
        account: str = ALICE,
        recurring: bool = False,
    ) -> None:
        made = AlertCreated(
            alert_id=alert_id,
            account_id=account,
            symbol="AAPL",
            condition=condition,
            price=D(price),
            recurring=recurring,
            ts=time.time_ns(),
        )
        subject = subjects.alert_event("created", account, alert_id)
        await self.js.publish(subject, alerts.encode(made))

    async def delete(self, alert_id: str, *, account: str = ALICE) -> None:
        gone = AlertDeleted(alert_id=alert_id, account_id=account, ts=time.time_ns())
        await self.js.publish(
            subjects.alert_event("deleted", account, alert_id), alerts.encode(gone)
        )

    async def prices(self, *prices: str) -> None:
        """A quote per price on one external venue (its mid is the reference)."""
        for price in prices:
            value = D(price)
            quote = marketdata.Quote(
                symbol="AAPL",
                venue="nyse",
                bid=value,
                ask=value,
                bid_size=D(10),
                ask_size=D(10),
                last=value,
                last_size=D(1),
                volume=D(0),
                ts=time.time_ns(),
                seq=next(self._seq),
            )
            await self.js.publish(subjects.market_data("nyse", "AAPL"), marketdata.encode(quote))

    def fired(self, alert_id: str | None = None) -> list[AlertFired]:
        return [e for _, e in self.heard if alert_id is None or e.alert_id == alert_id]


@pytest.fixture
async def market(nc: NATS, js: JetStreamContext) -> AsyncIterator[Market]:
    made = Market(nc, js)
    await made.listen()
    yield made


@pytest.fixture
async def running(nc: NATS, js: JetStreamContext) -> AsyncIterator[list[AlertsService]]:
    """Services started by a test, stopped at its end if it did not."""
    started: list[AlertsService] = []
    yield started
    for service in started:
        await service.abort()


async def start(nc: NATS, running: list[AlertsService], **settings: object) -> AlertsService:
    service = await AlertsService(nc, **settings).start()  # type: ignore[arg-type]
    running.append(service)
    return service


async def test_an_alert_fires_once_per_crossing_on_its_accounts_subject(
    nc: NATS, market: Market, running: list[AlertsService]
) -> None:
    service = await start(nc, running)
    await market.prices("189.00")
    await market.create("a1", "above", "190.00")
    await market.create("b1", "below", "150.00", account=BOB)
    await service.wait_caught_up()  # the requests are in before the quotes (no common order)
    await market.prices("189.99", "190.01", "191.00", "189.00", "192.00")
    await service.wait_caught_up()
    await eventually(lambda: len(market.heard) == 1)
    subject, event = market.heard[0]
    assert subject == subjects.alert_event("fired", ALICE, "a1")
    assert (event.market_price, event.direction, event.fire_count) == (D("190.01"), "up", 1)
    assert not event.recurring
    assert service.stats.fired == 1 and service.book.alert_ids() == ["b1"]
    # Bob's alert was never crossed, and Alice's firing went nowhere near his subject.
    assert market.fired("b1") == []


async def test_an_alert_whose_ids_cannot_be_subject_tokens_is_skipped(
    nc: NATS, js: JetStreamContext, market: Market, running: list[AlertsService]
) -> None:
    # A firing goes out on `alerts.fired.<account>.<alert id>`: an alert created over NATS
    # with a dot or a space in its ids used to stop the service when it fired, for good.
    service = await start(nc, running)
    await market.prices("189.00")
    for alert_id, account in (("x.y", ALICE), ("a b", ALICE), ("ok", "bo b"), ("x\n", ALICE)):
        made = AlertCreated(
            alert_id=alert_id,
            account_id=account,
            symbol="AAPL",
            condition="above",
            price=D("190.00"),
            ts=time.time_ns(),
        )
        await js.publish(subjects.alert_event("created", ALICE, "bad"), alerts.encode(made))
    await market.create("a1", "above", "190.00")
    await service.wait_caught_up()
    await market.prices("191.00")
    await service.wait_caught_up()  # raises the error of a service that failed
    await eventually(lambda: len(market.heard) == 1)
    assert [e.alert_id for e in market.fired()] == ["a1"]
    assert service.book.alert_ids() == []


async def test_a_recurring_alert_re_arms_when_the_price_goes_back(
    nc: NATS, market: Market, running: list[AlertsService]
) -> None:
    service = await start(nc, running)
    await market.create("r1", "crosses", "100.00", recurring=True)
    await service.wait_caught_up()  # the requests are in before the quotes (no common order)
    await market.prices("99.00", "100.50", "101.00", "99.50", "99.00", "100.01")
    await service.wait_caught_up()
    await eventually(lambda: len(market.fired("r1")) == 3)
    assert [(e.direction, e.fire_count) for e in market.fired("r1")] == [
        ("up", 1),
        ("down", 2),
        ("up", 3),
    ]


async def test_a_deleted_alert_fires_no_more_and_another_account_cannot_delete_it(
    nc: NATS, market: Market, running: list[AlertsService]
) -> None:
    service = await start(nc, running)
    await market.create("x", "above", "50.00", recurring=True)
    await market.delete("x", account=BOB)  # not Bob's
    await service.wait_caught_up()  # the requests are in before the quotes (no common order)
    await market.prices("49.00", "51.00")
    await service.wait_caught_up()
    await eventually(lambda: len(market.fired("x")) == 1)
    await market.delete("x")
    await market.prices("49.00", "51.00")
    await service.wait_caught_up()
    assert len(market.fired("x")) == 1 and len(service.book) == 0


async def test_a_restart_resumes_from_its_snapshot_without_firing_again(
    nc: NATS, market: Market, running: list[AlertsService]
) -> None:
    first = await start(nc, running)
    await market.create("a1", "above", "10.00", recurring=True)
    await first.wait_caught_up()  # the requests are in before the quotes (no common order)
    await market.prices("9.00", "11.00")
    await first.wait_caught_up()
    await eventually(lambda: len(market.heard) == 1)
    await first.stop()
    # While it is down: the price stays above (no new crossing), then a new alert is made.
    await market.prices("12.00", "11.50")
    await market.create("a2", "below", "5.00")
    second = await start(nc, running)
    await second.wait_caught_up()
    assert second.stats.restored_seq == first.md_seq
    assert second.stats.fired == 0 and second.book.alert_ids() == ["a1", "a2"]
    # Back across and up again: the second firing, numbered on from the first.
    await market.prices("9.50", "10.50")
    await second.wait_caught_up()
    await eventually(lambda: len(market.heard) == 2)
    assert [e.fire_count for e in market.fired("a1")] == [1, 2]


async def test_a_crash_replays_the_quotes_but_does_not_publish_a_firing_twice(
    nc: NATS, js: JetStreamContext, market: Market, running: list[AlertsService]
) -> None:
    # Snapshots only when a request comes in: the crash loses the quotes folded in since.
    first = await start(nc, running, snapshot_every=1_000_000, snapshot_interval=3600.0)
    await market.create("a1", "above", "10.00", recurring=True)
    await first.wait_caught_up()
    await market.prices("9.00", "11.00", "9.00", "11.00")
    await first.wait_caught_up()
    await eventually(lambda: len(market.heard) == 2)
    await first.abort()  # no snapshot: the next run replays all four quotes

    second = await start(nc, running, snapshot_every=1_000_000, snapshot_interval=3600.0)
    await second.wait_caught_up()
    assert second.stats.suppressed == 2 and second.stats.fired == 0
    assert second.book.fire_count("a1") == 2  # the same state as before the crash
    await market.prices("9.00", "11.00")
    await second.wait_caught_up()
    await eventually(lambda: len(market.heard) == 3)
    assert [e.fire_count for e in market.fired("a1")] == [1, 2, 3]
    stored = await js.stream_info(ALERTS.name, subjects_filter=subjects.alert_filter("fired"))
    # The stream keeps only the alert's latest firing.
    assert stored.state.subjects == {subjects.alert_event("fired", ALICE, "a1"): 1}


async def test_without_a_snapshot_it_reads_every_request_and_the_market_from_now(
    nc: NATS, market: Market, running: list[AlertsService]
) -> None:
    await market.create("old", "above", "1.00")
    await market.prices("5.00")  # before the service ever ran: not replayed
    service = await start(nc, running)
    await service.wait_caught_up()
    assert service.book.alert_ids() == ["old"] and market.heard == []
    await market.prices("6.00")
    await service.wait_caught_up()
    await eventually(lambda: len(market.fired("old")) == 1)


async def test_a_market_data_stream_made_anew_is_read_from_its_end(
    nc: NATS, js: JetStreamContext, market: Market, running: list[AlertsService]
) -> None:
    first = await start(nc, running)
    await market.create("a1", "above", "10.00")
    await first.wait_caught_up()  # the requests are in before the quotes (no common order)
    await market.prices("9.00", "9.50", "9.80")
    await first.wait_caught_up()
    await first.stop()
    await js.delete_stream(MARKET_DATA.name)
    await provision_stream(js, MARKET_DATA, replicas=1)
    second = await start(nc, running)
    assert second.md_seq == 0 and second.book.alert_ids() == ["a1"]
    await market.prices("10.50")
    await second.wait_caught_up()
    await eventually(lambda: len(market.fired("a1")) == 1)
