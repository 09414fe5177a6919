"""The dashboard as a trader and an operator use it, in headless chromium against a running
platform: sign in, watch prices, trade, cancel, see errors, watch the streams."""

from __future__ import annotations

import dataclasses
import itertools
import re
import time
from decimal import ROUND_DOWN, Decimal
from pathlib import Path

import httpx
from playwright.async_api import Page, expect

from bourse.gateway.server import Gateway
from bourse.model import marketdata, subjects
from bourse.platform import Platform
from bourse.risk import messages as risk_messages
from bourse.risk.messages import RiskAlert, Severity
from bourse.risk.rules import RuleName
from tests.analytics.factories import quote
from tests.conftest import eventually
from tests.dashboard.conftest import PageErrors

SYMBOL = "AAPL"
_risk_numbers = itertools.count(1)


async def sign_in(page: Page, platform: Platform) -> None:
    assert platform.gateway is not None
    await page.goto(platform.gateway.url)
    await expect(page.locator("#demo-offer")).to_be_visible()
    await page.get_by_role("button", name="Use the demo account's keys").click()
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    await expect(page.locator("#md-state")).to_have_attribute("data-state", "on")
    await expect(page.locator("#tu-state")).to_have_attribute("data-state", "on")


async def publish_risk_alert(
    platform: Platform, account_id: str, severity: Severity, message: str
) -> RiskAlert:
    """A RiskAlert as the risk service publishes it, on `risk.alerts.<severity>`."""
    assert platform.nc is not None
    alert = RiskAlert(
        ts=time.time_ns(),
        alert_id=f"risk-alert:{account_id}:test-{next(_risk_numbers)}",
        account_id=account_id,
        rule=RuleName.DAILY_LOSS,
        severity=severity,
        value=Decimal("850.00"),
        limit=Decimal("1000"),
        threshold=Decimal("800"),
        message=message,
    )
    await platform.nc.publish(subjects.risk_alert(severity), risk_messages.encode(alert))
    return alert


def watchlist_cell(page: Page, symbol: str, column: int) -> str:
    return f"#watchlist tr[data-symbol='{symbol}'] td:nth-child({column})"


async def test_nothing_private_without_keys_then_sign_in_and_prices_move(
    page: Page, platform: Platform, page_errors: PageErrors
) -> None:
    page_errors.expect(r"status of 401")  # the wrong secret below, as Chromium logs it
    assert platform.gateway is not None and platform.credentials is not None
    url = platform.gateway.url
    await page.goto(url)
    await expect(page.locator("#signin")).to_be_visible()
    await expect(page.locator("#app")).to_be_hidden()
    await expect(page.locator("#acct-cash")).to_have_text("–")
    # A wrong secret is refused with the API's own message.
    await page.get_by_label("API key id").fill(platform.credentials.key_id)
    await page.get_by_label("API secret key").fill("not-the-secret")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#signin-error")).to_have_text("unknown API key or wrong secret")
    await expect(page.locator("#app")).to_be_hidden()

    await page.get_by_role("button", name="Use the demo account's keys").click()
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#app")).to_be_visible()
    await expect(page.locator("#acct-cash")).to_have_text("100,000.00")
    # Prices arrive and move: the last price of the consolidated watchlist changes.
    last = page.locator(watchlist_cell(page, SYMBOL, 4))
    await expect(last).to_have_text(re.compile(r"^\d[\d,]*\.\d\d$"))
    first = await last.text_content()
    await expect(last).not_to_have_text(first or "")
    await expect(page.locator("#venues tbody tr")).to_have_count(3)  # nyse, nasdaq, bourse
    await expect(page.locator("#book tr.bid").first).to_contain_text(".")  # depth ladder
    await expect(page.locator("#tape tbody tr").first).to_contain_text(".")  # time & sales
    # The keys live in this tab's session storage, and the page works after a reload.
    await page.reload()
    await expect(page.locator("#app")).to_be_visible()
    await expect(page.locator("#signin")).to_be_hidden()

    # The operations endpoint is private; the demo keys are for loopback clients only.
    async with httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/v2/ops/streams")).status_code == 401
        keys = (await client.get("/dashboard/demo-keys")).json()
        assert keys["key_id"] == platform.credentials.key_id
        # ... asked for by a loopback client under another name (DNS rebinding): not offered.
        rebound = await client.get("/dashboard/demo-keys", headers={"Host": "evil.example"})
        assert rebound.status_code == 204 and rebound.content == b""


async def test_a_crossed_best_bid_and_offer_is_flagged_in_the_watchlist(
    page: Page, platform: Platform
) -> None:
    await sign_in(page, platform)
    assert platform.nc is not None
    row = page.locator("#watchlist tr[data-symbol='TSLA']")
    await expect(row.locator("td").nth(1)).to_have_text(re.compile(r"\d"))

    async def quote_on_a_test_venue(bid: str, ask: str) -> None:
        assert platform.nc is not None
        tick = quote(bid, ask, time.time_ns(), venue="test", symbol="TSLA")
        await platform.nc.publish(subjects.market_data("test", "TSLA"), marketdata.encode(tick))

    # A bid far above every other venue's ask: the best bid/offer is crossed.
    await quote_on_a_test_venue("900.00", "901.00")
    await expect(row).to_have_attribute("data-market", "crossed")
    await expect(row).to_have_attribute("title", re.compile("^crossed: "))
    await expect(row.locator("td").nth(1)).to_have_text("900.00")
    # That venue steps back (a bid and an ask nobody else beats): the flag goes.
    await quote_on_a_test_venue("1.00", "9000.00")
    await expect(row.locator("td").nth(1)).not_to_have_text("900.00")
    await expect(row).not_to_have_attribute("data-market", "crossed")


async def test_fills_from_before_the_page_was_opened_are_listed(
    page: Page, platform: Platform
) -> None:
    assert platform.gateway is not None
    keys = {
        "APCA-API-KEY-ID": platform.credentials.key_id,
        "APCA-API-SECRET-KEY": platform.credentials.secret,
    }
    async with httpx.AsyncClient(base_url=platform.gateway.url, headers=keys) as client:
        order = {"symbol": "MSFT", "qty": "3", "side": "buy", "type": "market"}
        placed = await client.post("/v2/orders", json={**order, "time_in_force": "day"})
        assert placed.status_code == 200 and placed.json()["status"] == "filled", placed.text
        price = Decimal(placed.json()["filled_avg_price"])
    await sign_in(page, platform)
    first = page.locator("#fills tbody tr").first
    await expect(first).to_contain_text("MSFT")
    await expect(first).to_contain_text(f"{price:,.2f}")


async def test_market_order_fills_and_the_position_and_cash_follow(
    page: Page, platform: Platform, screenshots: Path
) -> None:
    await sign_in(page, platform)
    await expect(page.locator("#acct-cash")).to_have_text("100,000.00")
    await expect(page.locator("#book tr.ask").last).to_contain_text(".")  # makers are quoting
    ticket = page.locator("#ticket")
    await ticket.get_by_label("Symbol").select_option(SYMBOL)
    await ticket.get_by_label("Type").select_option("market")
    await ticket.get_by_label("Quantity").fill("5")
    await ticket.get_by_role("button", name="Buy").click()
    await expect(page.locator("#ticket-result")).to_contain_text("filled: buy 5 AAPL market")

    position = page.locator(f"#positions tr[data-symbol='{SYMBOL}']")
    await expect(position.locator("td").nth(1)).to_have_text("5")
    await expect(position.locator("td.pl")).to_have_text(re.compile(r"^[+-]?\d[\d,]*\.\d\d$"))
    await expect(page.locator("#acct-cash")).not_to_have_text("100,000.00")
    await expect(page.locator("#fills tbody tr").first).to_contain_text(SYMBOL)
    await expect(page.locator("#acct-upl")).to_have_text(re.compile(r"^[+-]?\d[\d,]*\.\d\d$"))

    for panel in ("watchlist", "venues", "chart", "book", "tape", "ticket", "portfolio"):
        await page.locator(f"#panel-{panel}").screenshot(path=screenshots / f"{panel}.png")
    await page.screenshot(path=screenshots / "trading.png")


async def test_limit_order_rests_is_replaced_then_cancelled(page: Page, platform: Platform) -> None:
    assert platform.gateway is not None
    await sign_in(page, platform)
    reference = platform.gateway.prices.get(SYMBOL)
    assert reference is not None
    price = (reference * Decimal("0.95")).quantize(Decimal("0.01"), rounding=ROUND_DOWN)
    ticket = page.locator("#ticket")
    await ticket.get_by_label("Type").select_option("limit")
    await ticket.get_by_label("Time in force").select_option("gtc")
    await ticket.get_by_label("Quantity").fill("2")
    await ticket.get_by_label("Limit price").fill(str(price))
    await ticket.get_by_role("button", name="Buy").click()
    await expect(page.locator("#ticket-result")).to_contain_text("new: buy 2 AAPL limit")

    row = page.locator("#orders tbody tr[data-order-id]")
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text(f"{float(price):,.2f}")
    await expect(row).to_contain_text("buy limit gtc")
    # Replace: a new price (the replacement is a new order, still one open).
    replaced = price - Decimal("0.50")
    await row.get_by_role("button", name="Replace").click()
    await row.get_by_label("New limit price").fill(str(replaced))
    await row.get_by_role("button", name="Save").click()
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text(f"{float(replaced):,.2f}")
    await row.get_by_role("button", name=re.compile("^Cancel")).click()
    await expect(row).to_have_count(0)
    await expect(page.locator("#orders tbody")).to_contain_text("no open orders")


async def test_bad_orders_show_the_apis_error_next_to_the_field(
    page: Page, platform: Platform, page_errors: PageErrors
) -> None:
    # Chromium logs each refused request; these two are the point of the test.
    page_errors.expect(r"status of 422")
    await sign_in(page, platform)
    ticket = page.locator("#ticket")
    await ticket.get_by_label("Quantity").fill("0")
    await ticket.get_by_role("button", name="Buy").click()
    await expect(page.locator("#err-qty")).to_have_text("qty must be > 0, got 0")
    await expect(ticket.get_by_label("Quantity")).to_have_attribute("aria-invalid", "true")
    await expect(ticket.get_by_label("Quantity")).to_be_focused()

    await ticket.get_by_label("Quantity").fill("1")
    await ticket.get_by_label("Type").select_option("limit")
    await ticket.get_by_label("Limit price").fill("190.001")
    await ticket.get_by_role("button", name="Buy").click()
    await expect(page.locator("#err-limit_price")).to_contain_text("tick size")
    await expect(page.locator("#err-qty")).to_be_empty()
    assert [e for e in page_errors.seen if "422" in e], "the refusals reached the browser"


async def test_operations_counters_rise(page: Page, platform: Platform, screenshots: Path) -> None:
    await sign_in(page, platform)
    await page.get_by_role("tab", name="Operations").click()
    await expect(page.locator("#view-ops")).to_be_visible()
    messages = page.locator("#streams tr[data-key='MARKET_DATA'] td:nth-child(5)")
    await expect(messages).to_have_attribute("data-value", re.compile(r"^\d+$"))
    before = int(await messages.get_attribute("data-value") or "0")
    await page.wait_for_function(
        """([selector, before]) => {
            const cell = document.querySelector(selector);
            return cell && Number(cell.dataset.value) > before;
        }""",
        arg=["#streams tr[data-key='MARKET_DATA'] td:nth-child(5)", before],
    )
    rate = page.locator("#streams tr[data-key='MARKET_DATA'] td:nth-child(2)")
    await expect(rate).to_have_text(
        re.compile(r"^[1-9][\d,.]*$")
    )  # messages per second, above zero
    await expect(page.locator("#consumers tbody tr").first).to_be_visible()
    await expect(page.locator("#health .card[data-name='NATS']")).to_contain_text("connected")
    await expect(page.locator("#health .card[data-name='Feed rate']")).to_have_class("card ok")
    for service in ("accounts", "engine", "risk", "analytics", "history"):  # as /readyz has them
        card = page.locator(f"#health .card[data-name='Service: {service}']")
        await expect(card).to_contain_text("ready")
        await expect(card).to_have_class("card ok")
    # Sparklines have drawn at least two samples.
    await expect(
        page.locator("#streams tr[data-key='MARKET_DATA'] canvas.spark")
    ).to_have_attribute("aria-label", re.compile(r"^last ([2-9]|\d\d+) samples"))
    for panel in ("health", "streams", "consumers"):
        await page.locator(f"#panel-{panel}").screenshot(path=screenshots / f"{panel}.png")
    await page.screenshot(path=screenshots / "operations.png")


async def test_price_alert_is_created_fires_and_is_deleted(
    page: Page, platform: Platform, screenshots: Path
) -> None:
    assert platform.gateway is not None
    await sign_in(page, platform)
    panel = page.locator("#panel-alerts")
    await expect(panel.get_by_role("button", name="Add alert")).to_be_visible()
    reference = platform.gateway.prices.get(SYMBOL)
    assert reference is not None
    level = (reference - 1).quantize(Decimal("0.01"))  # already above: fires at once
    await panel.get_by_label("Symbol").select_option(SYMBOL)
    await panel.get_by_label("Condition").select_option("above")
    await panel.get_by_label("Price").fill(str(level))
    await panel.get_by_role("button", name="Add alert").click()
    await expect(page.locator("#toasts")).to_contain_text(f"Alert: {SYMBOL} above")
    row = panel.locator("#alerts-list tr[data-alert-id]")
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text("fired 1×")
    assert platform.credentials is not None
    risk = await publish_risk_alert(
        platform, platform.credentials.account_id, "warning", "daily loss 850.00 passed 80% of 1000"
    )
    await expect(panel.locator(f"#risk-alerts tr[data-alert-id='{risk.alert_id}']")).to_be_visible()
    await panel.screenshot(path=screenshots / "alerts.png")
    await row.get_by_role("button", name=re.compile("^Delete alert")).click()
    await expect(row).to_have_count(0)


async def test_risk_alerts_of_the_account_show_in_the_alerts_panel(
    page: Page, platform: Platform, page_errors: PageErrors
) -> None:
    gateway, credentials = platform.gateway, platform.credentials
    assert gateway is not None and gateway.risk is not None and credentials is not None
    feed, account = gateway.risk, credentials.account_id
    # One raised before the page opens: the page lists it from GET /v2/risk/alerts.
    earlier = await publish_risk_alert(platform, account, "warning", "earlier: 80% of the loss")
    await eventually(
        lambda: any(a.alert_id == earlier.alert_id for a in feed.recent(account)),
        message="the gateway never received the earlier risk alert",
    )
    await sign_in(page, platform)
    risk = page.locator("#panel-alerts #risk-alerts")
    earlier_row = risk.locator(f"tr[data-alert-id='{earlier.alert_id}']")
    await expect(earlier_row).to_have_attribute("data-severity", "warning")
    await expect(earlier_row).to_contain_text("earlier: 80% of the loss")
    await expect(earlier_row).to_contain_text("daily loss")

    # Live, from the risk stream: another account's first, then the signed-in account's.
    other = await publish_risk_alert(platform, "another-account", "critical", "not yours")
    own = await publish_risk_alert(platform, account, "critical", "daily loss reached: halted")
    own_row = risk.locator(f"tr[data-alert-id='{own.alert_id}']")
    await expect(own_row).to_have_attribute("data-severity", "critical")
    await expect(own_row.locator("td.severity")).to_have_text("critical")
    await expect(own_row.locator("td.rule")).to_have_text("daily loss")
    await expect(own_row.locator("td.message")).to_have_text("daily loss reached: halted")
    await expect(own_row.locator("td.time")).to_have_text(re.compile(r"^\d\d:\d\d:\d\d$"))
    await expect(risk.locator("tr[data-alert-id]").first).to_have_attribute(
        "data-alert-id", own.alert_id
    )  # the newest first
    await expect(page.locator("#toasts")).to_contain_text("Risk: daily loss reached: halted")
    # The other account's alert, published before, never reached this page.
    await expect(risk.locator(f"tr[data-alert-id='{other.alert_id}']")).to_have_count(0)
    await expect(risk).not_to_contain_text("not yours")
    # The severity colours differ.
    colour = "el => getComputedStyle(el).color"
    assert await own_row.locator("td.severity").evaluate(colour) != await earlier_row.locator(
        "td.severity"
    ).evaluate(colour)
    await expect(page.locator("#halted-banner")).to_be_hidden()  # the banner is the account's


async def test_a_halted_account_shows_the_banner_and_its_orders_are_refused(
    page: Page, platform: Platform, page_errors: PageErrors
) -> None:
    assert platform.gateway is not None and platform.credentials is not None
    page_errors.expect(r"status of 4\d\d")  # the refused order, as Chromium logs it
    await sign_in(page, platform)
    await expect(page.locator("#halted-banner")).to_be_hidden()
    credentials = platform.credentials
    admin = {
        "APCA-API-KEY-ID": credentials.admin_key_id,
        "APCA-API-SECRET-KEY": credentials.admin_secret,
    }
    async with httpx.AsyncClient(base_url=platform.gateway.url, headers=admin) as client:
        halted = await client.post(
            f"/admin/accounts/{credentials.account_id}/halt", json={"reason": "dashboard test"}
        )
        assert halted.status_code == 200, halted.text
    await expect(page.locator("#halted-banner")).to_be_visible()
    await expect(page.locator("#halted-reason")).to_contain_text("dashboard test")
    await page.locator("#ticket").get_by_role("button", name="Buy").click()
    await expect(page.locator("#err-form")).to_contain_text(re.compile("halt", re.IGNORECASE))


async def test_the_page_reconnects_after_the_gateway_restarts(
    page: Page, platform: Platform, page_errors: PageErrors
) -> None:
    gateway = platform.gateway
    assert gateway is not None and platform.nc is not None
    # While the gateway is away, Chromium logs each refused connection attempt.
    page_errors.expect(r"ERR_CONNECTION_REFUSED|ERR_EMPTY_RESPONSE|ERR_CONNECTION_RESET")
    page_errors.expect(r"WebSocket is closed before the connection is established")
    await sign_in(page, platform)
    port = int(gateway.url.rsplit(":", 1)[1])
    await gateway.stop()
    await expect(page.locator("#md-state")).to_have_attribute("data-state", "connecting")
    restarted = Gateway(
        platform.nc, dataclasses.replace(gateway.config, port=port), home=platform.config.home
    )
    await restarted.start()
    platform.gateway = restarted  # the platform stops this one at the end
    await expect(page.locator("#md-state")).to_have_attribute("data-state", "on")
    await expect(page.locator("#tu-state")).to_have_attribute("data-state", "on")
    last = page.locator(watchlist_cell(page, SYMBOL, 4))
    first = await last.text_content()
    await expect(last).not_to_have_text(first or "")
    await page.locator("#ticket").get_by_label("Quantity").fill("1")
    await page.locator("#ticket").get_by_role("button", name="Buy").click()
    await expect(page.locator("#ticket-result")).to_contain_text("filled: buy 1 AAPL")
