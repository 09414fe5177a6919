"""End to end: trading through the real `bourse` CLI against one real `bourse up`.

The platform runs without market data (`--rate 0`): no reference prices, so nothing but these
tests' own orders is on the book (market makers, if `bourse up` runs them, have nothing to
quote around); every fill below is between two accounts the tests opened themselves.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bourse.cli.trading import describe
from bourse.cli.watch import format_update
from bourse.client import Order
from bourse.updates import AlertFired, RiskAlert, TradeUpdate
from tests.cli.helpers import BOURSE, bourse, isolated_env, wait_for


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("trading")


@pytest.fixture(scope="module")
def env(workdir: Path) -> dict[str, str]:
    return isolated_env(workdir / "home")


@pytest.fixture(scope="module")
def platform(env: dict[str, str], workdir: Path) -> Iterator[None]:
    # Output to a file, not a pipe nobody reads: a full pipe would stall the platform.
    with (workdir / "up.log").open("w") as log:
        process = subprocess.Popen(
            [BOURSE, "up", "--rate", "0"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    runtime = Path(env["BOURSE_HOME"]) / "runtime.json"
    wait_for(lambda: runtime.exists() or process.poll() is not None, "runtime.json")
    assert process.poll() is None, (workdir / "up.log").read_text()
    yield
    process.send_signal(signal.SIGTERM)
    try:
        assert process.wait(timeout=30) == 0, (workdir / "up.log").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def ok(*args: str, env: dict[str, str], key: dict[str, str] | None = None) -> str:
    """Run `bourse ARGS` (as the account `key` if given); it must succeed; its stdout."""
    result = bourse(*args, *as_account(key), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    return result.stdout


def ok_json(*args: str, env: dict[str, str], key: dict[str, str] | None = None) -> Any:
    return json.loads(ok(*args, "--json", env=env, key=key))


def as_account(key: dict[str, str] | None) -> list[str]:
    return [] if key is None else ["--key-id", key["key_id"], "--secret", key["secret"]]


def new_account(env: dict[str, str], *options: str) -> dict[str, str]:
    made: dict[str, str] = json.loads(ok("accounts", "create", *options, env=env))
    assert set(made) == {"account_id", "key_id", "secret"}
    return made


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bourse: error: "), result.stderr
    return lines[0].removeprefix("bourse: error: ")


def test_the_demo_account_has_its_opening_cash(platform: None, env: dict[str, str]) -> None:
    shown = ok("account", env=env)
    assert "cash" in shown and "100,000.00" in shown
    assert "trading" in shown and "allowed" in shown
    account = ok_json("account", env=env)
    assert account["cash"] == "100000"
    assert account["trading_blocked"] is False


def test_a_limit_buy_below_the_market_rests_is_listed_and_cancels(
    platform: None, env: dict[str, str]
) -> None:
    placed = ok_json("order", "buy", "AAPL", "10", "--limit", "100.00", env=env)
    assert (placed["status"], placed["type"], placed["time_in_force"]) == ("new", "limit", "day")
    assert (placed["qty"], placed["filled_qty"], placed["limit_price"]) == ("10", "0", "100.00")
    order_id = placed["id"]

    listed = ok("orders", env=env)
    row = next(line for line in listed.splitlines() if order_id[:8] in line)
    assert "AAPL" in row and "buy 10 limit 100.00 day" in row and "new" in row
    assert order_id in [o["id"] for o in ok_json("orders", "--symbols", "AAPL", env=env)]

    assert ok("cancel", order_id, env=env) == f"order {order_id}: canceled\n"
    assert order_id not in [o["id"] for o in ok_json("orders", env=env)]
    closed = {o["id"]: o["status"] for o in ok_json("orders", "--status", "closed", env=env)}
    assert closed[order_id] == "canceled"


def test_an_order_is_two_lines_for_a_human_and_cancel_all_cancels_it(
    platform: None, env: dict[str, str]
) -> None:
    second = ok("order", "buy", "GOOGL", "2", "--limit", "50", "--tif", "gtc", env=env)
    first_line, second_line = second.splitlines()
    assert first_line == "new: buy 2 GOOGL limit 50, gtc"
    assert second_line.startswith("filled 0 of 2; order ")
    second_id = second_line.rsplit(" ", 1)[1]
    assert ok("cancel", "--all", env=env) == f"order {second_id}: canceled\n"
    assert ok("cancel", "--all", env=env) == "no open orders\n"


def test_accounts_create_prints_credentials_that_work(platform: None, env: dict[str, str]) -> None:
    made = new_account(env, "--cash", "5000")
    account = ok_json("account", env=env, key=made)
    assert account["id"] == made["account_id"]
    assert account["cash"] == "5000"
    assert account["shorting_enabled"] is False

    listed = {a["id"]: a["cash"] for a in ok_json("accounts", "list", env=env)}
    assert listed[made["account_id"]] == "5000"
    assert made["account_id"] in ok("accounts", "list", env=env)

    shown = ok("accounts", "deposit", made["account_id"], "250.50", env=env)
    assert shown == f"deposited 250.50 into account {made['account_id']}\n"
    assert ok_json("account", env=env, key=made)["cash"] == "5250.50"

    moved = ok(
        "accounts",
        "transfer-in",
        made["account_id"],
        "BTC/USD",
        "0.25",
        "--price",
        "64000",
        env=env,
    )
    assert moved == f"transferred 0.25 BTC-USD at 64,000 into account {made['account_id']}\n"
    held: list[dict[str, Any]] = []

    def arrived() -> bool:
        nonlocal held
        held = ok_json("positions", env=env, key=made)
        return bool(held)

    wait_for(arrived, "the transferred coins as a position")
    assert [(p["symbol"], p["qty"], p["avg_entry_price"]) for p in held] == [
        ("BTC-USD", "0.25", "64000")
    ]
    assert ok_json("account", env=env, key=made)["cash"] == "5250.50"


def test_an_admin_halts_and_resumes_an_account(platform: None, env: dict[str, str]) -> None:
    made = new_account(env, "--cash", "1000")
    account_id = made["account_id"]
    halted = ok("accounts", "halt", account_id, "--reason", "margin call", env=env)
    assert halted == f"account {account_id}: trading blocked (admin: margin call)\n"
    listed = {a["id"]: a for a in ok_json("accounts", "list", env=env)}
    assert listed[account_id]["trading_blocked"] is True
    assert listed[account_id]["blocked_reason"] == "admin: margin call"
    resumed = ok("accounts", "resume", account_id, env=env)
    assert resumed == f"account {account_id}: trading allowed\n"


@dataclass(frozen=True)
class Trade:
    seller: dict[str, str]
    buyer: dict[str, str]
    resting: dict[str, Any]  # the seller's order as `order --json` answered it
    taking: str  # the buyer's `order` output


@pytest.fixture(scope="module")
def trade(platform: None, env: dict[str, str]) -> Trade:
    """A short sale resting on the book, then a buy by another account that crosses it."""
    seller = new_account(env, "--cash", "100000", "--shorting")
    buyer = new_account(env, "--cash", "100000")
    resting = ok_json("order", "sell", "MSFT", "3", "--limit", "420.00", env=env, key=seller)
    taking = ok("order", "buy", "MSFT", "3", "--limit", "420.00", env=env, key=buyer)
    return Trade(seller, buyer, resting, taking)


def test_a_sell_and_a_crossing_buy_by_two_accounts_fill_each_other(
    trade: Trade, env: dict[str, str]
) -> None:
    assert trade.resting["status"] == "new"
    # The gateway answers once the engine has first spoken: usually with the fill, but the
    # acceptance can come a moment before it, so the answer may still say `new`.
    status, what = trade.taking.splitlines()[0].split(": ")
    assert what == "buy 3 MSFT limit 420.00, day" and status in ("new", "filled"), trade.taking
    if status == "filled":
        assert trade.taking.splitlines()[1].startswith("filled 3 of 3 at avg 420.00; order ")
    bought_id = trade.taking.splitlines()[1].rsplit(" ", 1)[1]
    for key, order_id in ((trade.seller, trade.resting["id"]), (trade.buyer, bought_id)):
        done = ok_json("orders", "--status", "closed", env=env, key=key)
        assert [(o["id"], o["status"], o["filled_qty"], o["filled_avg_price"]) for o in done] == [
            (order_id, "filled", "3", "420.00")
        ]


def test_positions_show_both_sides_of_the_trade(trade: Trade, env: dict[str, str]) -> None:
    held = ok_json("positions", env=env, key=trade.buyer)
    assert [(p["symbol"], p["qty"], p["avg_entry_price"]) for p in held] == [
        ("MSFT", "3", "420.00")
    ]
    short = ok_json("positions", env=env, key=trade.seller)
    assert [(p["symbol"], p["qty"], p["side"]) for p in short] == [("MSFT", "-3", "short")]
    table = ok("positions", env=env, key=trade.buyer)
    assert any(line.split()[:3] == ["MSFT", "3", "420.00"] for line in table.splitlines())
    assert ok_json("account", env=env, key=trade.buyer)["cash"] == "98740.00"


def test_fills_lists_each_sides_trade(trade: Trade, env: dict[str, str]) -> None:
    for key, side in ((trade.seller, "sell"), (trade.buyer, "buy")):
        found = ok_json("fills", env=env, key=key)
        assert [(f["symbol"], f["side"], f["qty"], f["price"], f["cum_qty"]) for f in found] == [
            ("MSFT", side, "3", "420.00", "3")
        ]
    table = ok("fills", env=env, key=trade.seller)
    row = next(line for line in table.splitlines() if "MSFT" in line)
    assert row.split()[1:] == [
        trade.resting["id"][:8],
        "MSFT",
        "sell",
        "3",
        "420.00",
        "3",
        "of",
        "3",
    ]


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["order", "buy", "AAPL", "0"], 1, "qty must be > 0, got 0"),
        (["fills", "--limit", "0"], 2, "from 1 to 100"),
        (["order", "buy", "NOPE", "1", "--limit", "1"], 1, "asset 'NOPE' not found (tradable: "),
        (["order", "buy", "AAPL", "1", "--limit", "abc"], 2, "invalid --limit: 'abc'"),
        (["order", "hold", "AAPL", "1"], 2, "invalid side: 'hold'; accepted: buy, sell"),
        (["order", "buy", "AAPL", "1"], 1, "no reference price for AAPL"),
        (["orders", "--status", "done"], 2, "accepted: open, closed, all"),
        (["cancel"], 2, "an order id, or --all"),
        (["cancel", "ffffffff"], 2, "exactly one open order's id (none does)"),
        (["cancel", "00000000-0000-0000-0000-000000000000"], 1, "not found"),
        (["close", "TSLA"], 1, "position does not exist: TSLA"),
        (["close", "TSLA", "--qty", "1", "--percentage", "5"], 2, "--qty and --percentage"),
        (["account", "--key-id", "PKNOPE", "--secret", "nope"], 1, "unknown API key"),
        (["account", "--key-id", "PKNOPE"], 2, "both --key-id and --secret"),
        (["accounts", "create", "--cash", "-5"], 1, "got -5"),
        (["accounts", "resume", "nobody"], 1, "account nobody not found"),
        (["accounts", "halt", "nobody", "--reason", "x"], 1, "account nobody not found"),
        (["watch", "--streams", "orders"], 2, "some of trade_updates, alerts, risk"),
        (["accounts", "revoke-key", "PKNOSUCHKEY"], 1, "API key PKNOSUCHKEY not found"),
        (["accounts", "keys", "nobody"], 1, "account nobody not found"),
        (["watch", "--key-id", "PKNOPE", "--secret", "nope"], 1, "refused the API key PKNOPE"),
    ],
)
def test_bad_input_gets_one_line_that_says_what_is_wrong(
    platform: None, env: dict[str, str], args: list[str], code: int, says: str
) -> None:
    result = bourse(*args, env=env)
    assert result.returncode == code, result.stderr
    assert says in one_error_line(result)


def test_an_accounts_key_is_rotated_and_the_old_one_revoked(
    platform: None, env: dict[str, str]
) -> None:
    old = new_account(env, "--cash", "1000")
    fresh: dict[str, str] = json.loads(ok("accounts", "new-key", old["account_id"], env=env))
    assert fresh["account_id"] == old["account_id"] and fresh["key_id"] != old["key_id"]
    assert ok_json("account", env=env, key=fresh)["id"] == old["account_id"]
    listed = ok_json("accounts", "keys", old["account_id"], env=env)
    assert [k["key_id"] for k in listed] == [old["key_id"], fresh["key_id"]]

    said = ok("accounts", "revoke-key", old["key_id"], env=env)
    assert said.startswith(f"key {old['key_id']}: revoked ") and said.endswith(" UTC\n")
    refused = bourse("account", *as_account(old), env=env)
    assert refused.returncode == 1
    assert one_error_line(refused) == "unknown API key or wrong secret"
    assert ok_json("account", env=env, key=fresh)["cash"] == "1000"
    table = ok("accounts", "keys", old["account_id"], env=env)
    rows = {line.split()[0]: line for line in table.splitlines() if line.startswith("PK")}
    assert "revoked" in rows[old["key_id"]] and "active" in rows[fresh["key_id"]]


def test_watch_prints_the_accounts_own_updates_as_they_arrive(
    platform: None, env: dict[str, str]
) -> None:
    seller = new_account(env, "--cash", "100000", "--shorting")
    buyer = new_account(env, "--cash", "100000")
    watching = subprocess.Popen(
        [BOURSE, "watch", "--json", "--count", "2", *as_account(buyer)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watching.stderr is not None
        listening = watching.stderr.readline()  # once it listens, updates from here on arrive
        assert listening.startswith("bourse: watching trade_updates, alerts, risk at ws://")
        ok("order", "sell", "AMZN", "2", "--limit", "180.00", env=env, key=seller)
        ok("order", "buy", "AMZN", "2", "--limit", "180.00", env=env, key=buyer)
        out, err = watching.communicate(timeout=60)
    finally:
        if watching.poll() is None:
            watching.kill()
            watching.wait()
    assert watching.returncode == 0, err
    new, fill = (json.loads(line) for line in out.splitlines())  # the seller's are not here
    assert (new["type"], new["event"], new["order"]["side"]) == ("TradeUpdate", "new", "buy")
    assert (fill["type"], fill["event"]) == ("TradeUpdate", "fill")
    assert (fill["price"], fill["qty"], fill["position_qty"]) == ("180.00", "2", "2")
    assert (fill["order"]["status"], fill["order"]["filled_qty"]) == ("filled", "2")
    assert new["order"]["id"] == fill["order"]["id"]


def test_watch_stops_cleanly_on_ctrl_c(platform: None, env: dict[str, str]) -> None:
    watching = subprocess.Popen(
        [BOURSE, "watch"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert watching.stderr is not None
        assert watching.stderr.readline().startswith("bourse: watching ")
        watching.send_signal(signal.SIGINT)
        out, err = watching.communicate(timeout=30)
    finally:
        if watching.poll() is None:
            watching.kill()
            watching.wait()
    assert watching.returncode == 0, err
    assert (out, err) == ("", "")


def test_watch_lines_read_as_a_trader_would_say_them() -> None:
    order = msgspec.json.decode(
        json.dumps(
            {
                "id": "7e2fbf27-6453-4321-b35d-99d8b91b5a5d",
                "client_order_id": "c1",
                "symbol": "BTC-USD",
                "side": "buy",
                "type": "limit",
                "time_in_force": "gtc",
                "qty": "0.0100",
                "filled_qty": "0.0040",
                "limit_price": "65000.00",
                "status": "partially_filled",
            }
        ),
        type=Order,
    )
    at = datetime(2026, 12, 2, 10, 33, 1, 123000, tzinfo=UTC)
    new = TradeUpdate(event="new", order=order, timestamp=at)
    assert format_update(new) == (
        "10:33:01.123  new           buy 0.01 BTC-USD limit 65,000.00, gtc; order 7e2fbf27"
    )
    fill = TradeUpdate(
        event="partial_fill",
        order=order,
        timestamp=at,
        price=Decimal("64990.00"),
        qty=Decimal("0.0040"),
        position_qty=Decimal("2.0040"),
    )
    assert format_update(fill) == (
        "10:33:01.123  partial_fill  buy 0.004 BTC-USD at 64,990.00; filled 0.004 of 0.01, "
        "position 2.004; order 7e2fbf27"
    )
    fired = AlertFired(
        alert_id="5b0c9a52-4c1e",
        symbol="AAPL",
        condition="above",
        price=Decimal("200"),
        market_price=Decimal("200.01"),
        timestamp=at,
    )
    assert format_update(fired) == (
        "10:33:01.123  alert         AAPL above 200 at 200.01; alert 5b0c9a52"
    )
    risk = RiskAlert(
        alert_id="r1",
        rule="daily_loss",
        severity="critical",
        message="lost 1,050.00 today",
        timestamp=at,
    )
    assert format_update(risk) == "10:33:01.123  risk critical daily_loss: lost 1,050.00 today"


def test_an_account_key_is_not_an_admin_key(platform: None, env: dict[str, str]) -> None:
    trader = new_account(env)
    result = bourse("accounts", "list", *as_account(trader), env=env)
    assert result.returncode == 1
    assert one_error_line(result) == "this endpoint needs an admin key"


def test_without_a_platform_the_error_says_how_to_start_one(workdir: Path) -> None:
    env = isolated_env(workdir / "nothing-here")
    result = bourse("account", env=env)
    assert result.returncode == 2
    assert "no platform to connect to: start one with `bourse up`" in one_error_line(result)

    refused = bourse("positions", "--api", "http://127.0.0.1:1", env=env)
    assert refused.returncode == 2
    assert "no API key for http://127.0.0.1:1" in one_error_line(refused)

    env |= {"APCA_API_KEY_ID": "PKX", "APCA_API_SECRET_KEY": "x"}
    refused = bourse("positions", "--api", "http://127.0.0.1:1", env=env)
    assert refused.returncode == 2
    message = one_error_line(refused)
    assert "cannot reach the Bourse API at http://127.0.0.1:1 (connection refused)" in message
    assert "`bourse up`" in message


def test_quantities_read_as_asked_for_not_at_the_lot_sizes_scale() -> None:
    """The exchange reports 0.0100 BTC filled of 0.01 (its lot is 0.0001); a person reads 0.01
    of 0.01. Prices keep their digits."""
    order = msgspec.convert(
        {
            "id": "7939b3d0-0348-486e-8434-95e1b6ee00f0",
            "client_order_id": "c",
            "symbol": "BTC-USD",
            "side": "sell",
            "type": "market",
            "time_in_force": "gtc",
            "qty": "0.01",
            "filled_qty": "0.0100",
            "filled_avg_price": "64988.90",
            "status": "filled",
        },
        Order,
        strict=False,
    )
    assert describe(order).splitlines() == [
        "filled: sell 0.01 BTC-USD market, gtc",
        "filled 0.01 of 0.01 at avg 64,988.90; order 7939b3d0-0348-486e-8434-95e1b6ee00f0",
    ]
