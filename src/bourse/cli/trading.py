"""Trading from the shell: `bourse order`, `orders`, `cancel`, `positions`, `close`, `account`,
`bourse alerts create|list|delete` and `bourse accounts create|list|deposit|halt|resume`, over
the HTTP API (`bourse.client`).

By default they trade the running platform's demo account (its key is in runtime.json) and
administer with its admin key; --api/--key-id/--secret or $BOURSE_API_URL, $APCA_API_KEY_ID
and $APCA_API_SECRET_KEY say otherwise. The API's refusals are one line on stderr and exit 1;
bad arguments, or no API to talk to, exit 2.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal, TypeVar, get_args

import msgspec
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from bourse.cli.common import parse_symbols
from bourse.client import (
    API_URL_ENV,
    KEY_ID_ENV,
    SECRET_ENV,
    AccountSummary,
    Alert,
    AlertCondition,
    AlertStatusFilter,
    ApiError,
    BourseClient,
    Order,
    Position,
    Side,
    StatusFilter,
    TimeInForce,
)
from bourse.errors import ConfigError
from bourse.model.subjects import normalize_symbol

_L = TypeVar("_L", bound=str)
FULL_ID = 36  # a UUID's length
SHORT_ID = 8  # as `bourse orders` shows ids
SIDES: tuple[Side, ...] = get_args(Side)
TIMES_IN_FORCE: tuple[TimeInForce, ...] = get_args(TimeInForce)
STATUS_FILTERS: tuple[StatusFilter, ...] = get_args(StatusFilter)
ALERT_CONDITIONS: tuple[AlertCondition, ...] = get_args(AlertCondition)
ALERT_STATUSES: tuple[AlertStatusFilter, ...] = get_args(AlertStatusFilter)

ApiOption = Annotated[
    str | None,
    typer.Option(
        "--api",
        help=f"API URL. Default: ${API_URL_ENV}, else the running platform's.",
        show_default=False,
    ),
]
KeyIdOption = Annotated[
    str | None,
    typer.Option(
        "--key-id",
        help=f"API key id. Default: ${KEY_ID_ENV}, else the running platform's demo key.",
        show_default=False,
    ),
]
SecretOption = Annotated[
    str | None,
    typer.Option("--secret", help=f"API secret. Default: ${SECRET_ENV}.", show_default=False),
]
AdminKeyIdOption = Annotated[
    str | None,
    typer.Option(
        "--key-id", help="Admin key id. Default: the running platform's.", show_default=False
    ),
]
AdminSecretOption = Annotated[
    str | None, typer.Option("--secret", help="Admin secret.", show_default=False)
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead.")]


def register(app: typer.Typer) -> None:
    for name, command in (
        ("order", order),
        ("orders", list_orders),
        ("fills", list_fills),
        ("cancel", cancel),
        ("positions", positions),
        ("close", close),
        ("account", account),
    ):
        app.command(name)(command)
    group = typer.Typer(
        name="accounts",
        help="Open, list, fund, halt and resume accounts (with the admin key).",
        no_args_is_help=True,
    )
    group.command("create")(create_account)
    group.command("list")(list_accounts)
    group.command("deposit")(deposit)
    group.command("transfer-in")(transfer_in)
    group.command("keys")(list_keys)
    group.command("new-key")(new_key)
    group.command("revoke-key")(revoke_key)
    group.command("halt")(halt)
    group.command("resume")(resume)
    app.add_typer(group)
    alerts = typer.Typer(
        name="alerts",
        help="Price alerts: create, list and delete the account's (a Bourse extension).",
        no_args_is_help=True,
    )
    alerts.command("create")(create_alert)
    alerts.command("list")(list_alerts)
    alerts.command("delete")(delete_alert)
    app.add_typer(alerts)


# ---- arguments ----


def parse_decimal(name: str, text: str, example: str) -> Decimal:
    """A finite decimal number, exactly as typed (no float rounding)."""
    try:
        number = Decimal(text)
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite():
        raise ConfigError(name, text, f"a decimal number such as {example}")
    return number


def parse_choice(name: str, text: str, choices: tuple[_L, ...]) -> _L:
    for choice in choices:
        if text.lower() == choice:
            return choice
    raise ConfigError(name, text, ", ".join(choices))


@contextlib.contextmanager
def _client(
    api: str | None, key_id: str | None, secret: str | None, *, admin: bool = False
) -> Iterator[BourseClient]:
    """A connected client; the API's refusals become one line on stderr and exit 1."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # no line per request
    try:
        with BourseClient.connect(api, key_id, secret, admin=admin) as client:
            yield client
    except ApiError as error:
        typer.echo(f"bourse: error: {error}", err=True)
        raise typer.Exit(1) from None


def _print_json(value: Any) -> None:
    typer.echo(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


# ---- formatting ----


def fmt_number(value: Decimal | None) -> str:
    return "-" if value is None else f"{value:,f}"


def fmt_qty(value: Decimal | None) -> str:
    """A quantity without the trailing zeros of the lot size's scale: the exchange reports
    0.0100 BTC filled of the 0.01 asked for; both read 0.01."""
    return "-" if value is None else fmt_number(value.normalize())


def _money(value: Decimal | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _pnl(value: Decimal | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return _money(value)
    colour = "green" if value > 0 else "red"
    return f"[{colour}]{value:+,.2f}[/]"


def _time(moment: datetime | None) -> str:
    """The time of day for today's (UTC), else the date: what tells orders apart at a glance."""
    if moment is None:
        return "-"
    if moment.date() == datetime.now(UTC).date():
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%Y-%m-%d")


def fmt_prices(order: Order) -> str:
    parts = []
    if order.stop_price is not None:
        parts.append(f"stop {fmt_number(order.stop_price)}")
    if order.limit_price is not None:
        parts.append(f"limit {fmt_number(order.limit_price)}")
    return " ".join(parts) or "market"


def describe(order: Order) -> str:
    """An order in two lines: what it is and its status, then how much filled (at what
    average price, once something has) and its id."""
    average = ""
    if order.filled_avg_price is not None:
        average = f" at avg {fmt_number(order.filled_avg_price)}"
    return (
        f"{order.status}: {order.side} {fmt_qty(order.qty)} {order.symbol} "
        f"{fmt_prices(order)}, {order.time_in_force}\n"
        f"filled {fmt_qty(order.filled_qty)} of {fmt_qty(order.qty)}{average}; order {order.id}"
    )


def _table(title: str, columns: Sequence[tuple[str, Literal["left", "right"]]]) -> Table:
    # Compact (no outer edge, collapsed padding) so that a table fits 80 columns.
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
        show_edge=False,
    )
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=True)
    return table


def orders_table(found: Sequence[Order], title: str) -> Table:
    """Orders with short ids (`bourse cancel` takes a prefix; --json has the whole ids)."""
    table = _table(
        title,
        (
            ("Time UTC", "left"),
            ("ID", "left"),
            ("Symbol", "left"),
            ("Order", "left"),
            ("Filled", "right"),
            ("Status", "left"),
        ),
    )
    for o in found:
        filled = fmt_qty(o.filled_qty)
        if o.filled_avg_price is not None:
            filled += f" @ {fmt_number(o.filled_avg_price)}"
        table.add_row(
            _time(o.submitted_at or o.created_at),
            o.id[:SHORT_ID],
            o.symbol,
            f"{o.side} {fmt_qty(o.qty)} {fmt_prices(o)} {o.time_in_force}",
            filled,
            o.status,
        )
    if not found:
        table.caption = "no orders"
    return table


def positions_table(found: Sequence[Position]) -> Table:
    table = _table(
        "Positions",
        (
            ("Symbol", "left"),
            ("Qty", "right"),
            ("Avg entry", "right"),
            ("Price", "right"),
            ("Market value", "right"),
            ("Unrealized P&L", "right"),
            ("P&L %", "right"),
        ),
    )
    for p in found:
        percent = None if p.unrealized_plpc is None else p.unrealized_plpc * 100
        table.add_row(
            p.symbol,
            fmt_qty(p.qty),
            fmt_number(p.avg_entry_price),
            fmt_number(p.current_price),
            _money(p.market_value),
            _pnl(p.unrealized_pl),
            _pnl(percent),
        )
    if not found:
        table.caption = "no open positions"
    return table


# ---- trading ----


def order(
    side: Annotated[
        str, typer.Argument(metavar="buy|sell", help="buy or sell.", show_default=False)
    ],
    symbol: Annotated[str, typer.Argument(metavar="SYMBOL", help="AAPL, BTC-USD (or BTC/USD) ...")],
    qty: Annotated[
        str, typer.Argument(metavar="QTY", help="Quantity: shares, or coins (e.g. 0.05).")
    ],
    limit: Annotated[
        str | None,
        typer.Option("--limit", help="Limit price: a limit order (stop-limit with --stop)."),
    ] = None,
    stop: Annotated[
        str | None,
        typer.Option("--stop", help="Stop price: a stop order (stop-limit with --limit)."),
    ] = None,
    tif: Annotated[
        str | None,
        typer.Option(
            "--tif", help="Time in force: day, gtc, ioc, fok. Default: gtc for crypto, else day."
        ),
    ] = None,
    client_order_id: Annotated[
        str | None,
        typer.Option("--client-order-id", help="Your id for it (unique per account)."),
    ] = None,
    api: ApiOption = None,
    key_id: KeyIdOption = None,
    secret: SecretOption = None,
    as_json: JsonOption = False,
) -> None:
    """Submit an order: market, or limit/stop/stop-limit with --limit and --stop.

    Prints the order as the exchange left it: new (resting), filled, canceled (ioc/fok)...
    """
    chosen_side = parse_choice("side", side, SIDES)
    symbol = normalize_symbol(symbol)
    quantity = parse_decimal("qty", qty, "10 or 0.05")
    limit_price = None if limit is None else parse_decimal("--limit", limit, "189.50")
    stop_price = None if stop is None else parse_decimal("--stop", stop, "185.00")
    time_in_force = None if tif is None else parse_choice("--tif", tif, TIMES_IN_FORCE)
    with _client(api, key_id, secret) as client:
        if time_in_force is None:
            time_in_force = _default_time_in_force(client, symbol)
        placed = client.submit(
            symbol,
            chosen_side,
            quantity,
            time_in_force=time_in_force,
            limit_price=limit_price,
            stop_price=stop_price,
            client_order_id=client_order_id,
        )
    if as_json:
        _print_json(placed)
    else:
        typer.echo(describe(placed))


def _default_time_in_force(client: BourseClient, symbol: str) -> TimeInForce:
    # Crypto trades around the clock (Alpaca accepts only gtc and ioc for it); shares by day.
    try:
        asset = client.asset(symbol)
    except ApiError as error:
        if error.status == 404:
            return "day"  # the order's own answer says which symbols are traded
        raise
    return "gtc" if asset.asset_class == "crypto" else "day"


def list_orders(
    status: Annotated[str, typer.Option(help="open, closed or all.")] = "open",
    limit: Annotated[int, typer.Option(help="At most this many, newest first (1-500).")] = 50,
    symbols: Annotated[
        str | None, typer.Option(help="Only these symbols, comma-separated (e.g. AAPL,TSLA).")
    ] = None,
    api: ApiOption = None,
    key_id: KeyIdOption = None,
    secret: SecretOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the account's orders, newest first."""
    chosen = parse_choice("--status", status, STATUS_FILTERS)
    if not 1 <= limit <= 500:
        raise ConfigError("--limit", limit, "a number of orders from 1 to 500")
    wanted = parse_symbols(symbols)
    with _client(api, key_id, secret) as client:
        found = client.orders(chosen, limit=limit, symbols=wanted)
    if as_json:
        _print_json(found)
    else:
        Console().print(orders_table(found, f"Orders ({chosen})"))


def list_fills(
    limit: Annotated[int, typer.Option(help="At most this many, newest first (1-100).")] = 20,
    api: ApiOption = None,
    key_id: KeyIdOption = None,
    secret: SecretOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the account's latest fills (trades), newest first."""
    if not 1 <= limit <= 100:
        raise ConfigError("--limit", limit, "a number of fills from 1 to 100")
    with _client(api, key_id, secret) as client:
        found = client.fills(limit=limit)
    if as_json:
        _print_json(found)
        return
    table = _table(
        "Fills",
        (
            ("Time UTC", "left"),
            ("Order", "left"),
            ("Symbol", "left"),
            ("Side", "left"),
            ("Qty", "right"),
            ("Price", "right"),
            ("Order filled", "right"),
        ),
    )
    for f in found:
        table.add_row(
            _time(f.transaction_time),
            f.order_id[:SHORT_ID],
            f.symbol,
            f.side,
            fmt_qty(f.qty),
            fmt_number(f.price),
            f"{fmt_qty(f.cum_qty)} of {fmt_qty(f.cum_qty + f.leaves_qty)}",
        )
    if not found:
        table.caption = "no fills"
    Console().print(table)


def cancel(
    order_id: Annotated[
        str | None,
        typer.Argument(help="The order's id, or the start of it (as `bourse orders` shows)."),
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Cancel every open order.")] = False,
    api: ApiOption = None,
    key_id: KeyIdOption = None,
    secret: SecretOption = None,
) -> None:
    """Cancel an open order, or all of them with --all."""
    if (order_id is None) == (not every):
        raise ConfigError("arguments", order_id or "none", "an order id, or --all (not both)")
    with _client(api, key_id, secret) as client:
        if order_id is not None:
            full_id = _open_order_id(client, order_id)
            client.cancel(full_id)
            typer.echo(f"order {full_id}: {client.order(full_id).status}")
            return
        outcomes = client.cancel_all()
    failed = [o for o in outcomes if o.error is not None]
    for outcome in outcomes:
        if outcome.order is not None:
            typer.echo(f"order {outcome.id}: {outcome.order.status}")
    for outcome in failed:
        typer.echo(f"bourse: error: order {outcome.id}: {outcome.error}", err=True)
    if not outcomes:
        typer.echo("no open orders")
    if failed:
        raise typer.Exit(1)


def _open_order_id(client: BourseClient, given: str) -> str:
    """A whole id as given; a shorter one is the start of exactly one open order's id."""
    if len(given) >= FULL_ID:
        return given
    if len(given) < 4:
        raise ConfigError("order id", given, "an order id, or at least its first 4 characters")
    matches = [o.id for o in client.orders("open", limit=500) if o.id.startswith(given.lower())]
    if len(matches) != 1:
        found = "none does" if not matches else f"{len(matches)} do"
        raise ConfigError("order id", given, f"the start of exactly one open order's id ({found})")
    return matches[0]


def positions(
    api: ApiOption = None,
    key_id: KeyIdOption = None,
    secret: SecretOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show open positions, marked at the latest reference price."""
    with _client(api, key_id, secret) as client:
        found = client.positions()
    if as_json:
        _print_json(found)
    else:
        Console().print(positions_table(found))


def close(
    symbol: Annotated[str, typer.Argument(help="The position's symbol.")],
    qty: Annotated[str | None, typer.Option(help="Close only this quantity.")] = None,
    percentage: Annotated[
        str | None, typer.Option(help="Close only this percentage (0-100] of it.")
    ] = None,
    api: ApiOption = None,
    key_id: KeyIdOption = None,
    secret: SecretOption = None,
    as_json: JsonOption = False,
) -> None:
    """Close a position (all of it, or --qty or --percentage) with a market order."""
    symbol = normalize_symbol(symbol)
    if qty is not None and percentage is not None:
        raise ConfigError("--qty and --percentage", "both", "one of them, or neither (all)")
    amount = None if qty is None else parse_decimal("--qty", qty, "5")
    share = None if percentage is None else parse_decimal("--percentage", percentage, "50")
    with _client(api, key_id, secret) as client:
        closing = client.close_position(symbol, qty=amount, percentage=share)
    if as_json:
        _print_json(closing)
    else:
        typer.echo(describe(closing))


def account(
    api: ApiOption = None,
    key_id: KeyIdOption = None,
    secret: SecretOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the account: cash, buying power, equity, P&L, whether it may trade."""
    with _client(api, key_id, secret) as client:
        found = client.account()
        held = [] if as_json else client.positions()
    if as_json:
        _print_json(found)
        return
    unrealized = sum((p.unrealized_pl or Decimal(0) for p in held), Decimal(0))
    trading = "allowed"
    if found.trading_blocked:
        trading = f"[red]BLOCKED[/] ({found.blocked_reason or 'no reason given'})"
    grid = Table.grid(padding=(0, 2))
    grid.add_column()
    grid.add_column(justify="right")
    rows = (
        ("cash", _money(found.cash)),
        ("buying power", _money(found.buying_power)),
        ("equity", _money(found.equity)),
        ("long market value", _money(found.long_market_value)),
        ("short market value", _money(found.short_market_value)),
        ("realized P&L", _pnl(found.realized_pl)),
        ("unrealized P&L", _pnl(unrealized)),
        ("trading", trading),
        ("shorting", "enabled" if found.shorting_enabled else "disabled"),
    )
    for name, value in rows:
        grid.add_row(name, value)
    console = Console()
    console.print(f"Account {found.id} ({found.status}, {found.currency})", highlight=False)
    console.print(grid, highlight=False)


# ---- price alerts ----


def describe_alert(alert: Alert) -> str:
    """An alert in one line: what it watches, how often, where it stands, its id."""
    kind = "recurring" if alert.recurring else "one-shot"
    if alert.hysteresis:
        kind += f", hysteresis {fmt_number(alert.hysteresis)}"
    fired = f", fired {alert.fire_count}x" if alert.fire_count else ""
    return (
        f"{alert.status}: {alert.symbol} {alert.condition} {fmt_number(alert.price)} ({kind})"
        f"{fired}; alert {alert.id}"
    )


def create_alert(
    symbol: Annotated[str, typer.Argument(metavar="SYMBOL", help="AAPL, BTC-USD (or BTC/USD) ...")],
    condition: Annotated[
        str,
        typer.Argument(
            metavar="above|below|crosses",
            help="above / below: when the price is beyond PRICE; crosses: when it passes "
            "PRICE either way.",
            show_default=False,
        ),
    ],
    price: Annotated[str, typer.Argument(metavar="PRICE", help="The level, e.g. 200.50.")],
    recurring: Annotated[
        bool,
        typer.Option("--recurring", help="Fire again each time the price comes back across."),
    ] = False,
    hysteresis: Annotated[
        str | None,
        typer.Option(help="How far back across the price must go to re-arm (default 0)."),
    ] = None,
    api: ApiOption = None,
    key_id: KeyIdOption = None,
    secret: SecretOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a price alert; its firings come on the WebSocket and on NATS (docs/alerts.md)."""
    symbol = normalize_symbol(symbol)
    chosen = parse_choice("condition", condition, ALERT_CONDITIONS)
    level = parse_decimal("price", price, "200.50")
    band = None if hysteresis is None else parse_decimal("--hysteresis", hysteresis, "0.50")
    with _client(api, key_id, secret) as client:
        made = client.create_alert(symbol, chosen, level, recurring=recurring, hysteresis=band)
    if as_json:
        _print_json(made)
    else:
        typer.echo(describe_alert(made))


def list_alerts(
    status: Annotated[str, typer.Option(help="active, triggered or all.")] = "all",
    api: ApiOption = None,
    key_id: KeyIdOption = None,
    secret: SecretOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the account's price alerts, oldest first."""
    chosen = parse_choice("--status", status, ALERT_STATUSES)
    with _client(api, key_id, secret) as client:
        found = client.alerts(chosen)
    if as_json:
        _print_json(found)
        return
    table = _table(
        f"Alerts ({chosen})",
        (
            ("ID", "left"),
            ("Symbol", "left"),
            ("Alert", "left"),
            ("Status", "left"),
            ("Fired", "right"),
            ("Last fired", "left"),
        ),
    )
    for a in found:
        last = "-"
        if a.last_fired_at is not None:
            last = f"{_time(a.last_fired_at)} @ {fmt_number(a.last_fired_price)}"
        table.add_row(
            a.id[:SHORT_ID],
            a.symbol,
            f"{a.condition} {fmt_number(a.price)}" + (" recurring" if a.recurring else ""),
            a.status,
            str(a.fire_count),
            last,
        )
    if not found:
        table.caption = "no alerts"
    Console().print(table)


def delete_alert(
    alert_id: Annotated[
        str, typer.Argument(help="The alert's id, or the start of it (as `bourse alerts list`).")
    ],
    api: ApiOption = None,
    key_id: KeyIdOption = None,
    secret: SecretOption = None,
) -> None:
    """Delete a price alert."""
    with _client(api, key_id, secret) as client:
        full_id = alert_id
        if len(alert_id) < FULL_ID:
            if len(alert_id) < 4:
                raise ConfigError("alert id", alert_id, "an alert id, or its first 4 characters")
            matches = [a.id for a in client.alerts() if a.id.startswith(alert_id.lower())]
            if len(matches) != 1:
                found = "none does" if not matches else f"{len(matches)} do"
                raise ConfigError(
                    "alert id", alert_id, f"the start of exactly one alert's id ({found})"
                )
            full_id = matches[0]
        client.delete_alert(full_id)
    typer.echo(f"alert {full_id}: deleted")


# ---- administration ----


def create_account(
    cash: Annotated[str, typer.Option(help="Opening cash.")] = "100000",
    shorting: Annotated[bool, typer.Option("--shorting", help="Allow short sales.")] = False,
    api: ApiOption = None,
    key_id: AdminKeyIdOption = None,
    secret: AdminSecretOption = None,
) -> None:
    """Open an account and print its id and API key as JSON (the secret is shown once)."""
    opening = parse_decimal("--cash", cash, "100000")
    with _client(api, key_id, secret, admin=True) as client:
        _print_json(client.create_account(opening, shorting=shorting))


def list_keys(
    account_id: Annotated[str, typer.Argument(help="The account whose keys to list.")],
    api: ApiOption = None,
    key_id: AdminKeyIdOption = None,
    secret: AdminSecretOption = None,
    as_json: JsonOption = False,
) -> None:
    """List an account's API keys (never their secrets), revoked ones included."""
    with _client(api, key_id, secret, admin=True) as client:
        found = client.keys(account_id)
    if as_json:
        _print_json(found)
        return
    table = _table("API keys", (("Key id", "left"), ("Created UTC", "left"), ("Status", "left")))
    for key in found:
        status = "active" if key.revoked_at is None else f"revoked {_time(key.revoked_at)}"
        table.add_row(key.key_id, _time(key.created_at), status)
    Console().print(table)


def new_key(
    account_id: Annotated[str, typer.Argument(help="The account to make another key for.")],
    api: ApiOption = None,
    key_id: AdminKeyIdOption = None,
    secret: AdminSecretOption = None,
) -> None:
    """Make another API key for an account and print it as JSON (the secret is shown once)."""
    with _client(api, key_id, secret, admin=True) as client:
        _print_json(client.create_key(account_id))


def revoke_key(
    revoked: Annotated[str, typer.Argument(metavar="KEY_ID", help="The key to revoke.")],
    api: ApiOption = None,
    key_id: AdminKeyIdOption = None,
    secret: AdminSecretOption = None,
) -> None:
    """Revoke an API key: refused at once on every gateway, its streams closed."""
    with _client(api, key_id, secret, admin=True) as client:
        found = client.revoke_key(revoked)
    typer.echo(f"key {found.key_id}: revoked {found.revoked_at:%Y-%m-%d %H:%M:%S} UTC")


def list_accounts(
    api: ApiOption = None,
    key_id: AdminKeyIdOption = None,
    secret: AdminSecretOption = None,
    as_json: JsonOption = False,
) -> None:
    """List every trading account."""
    with _client(api, key_id, secret, admin=True) as client:
        found = client.accounts()
    if as_json:
        _print_json(found)
        return
    table = _table(
        "Accounts",
        (
            ("ID", "left"),
            ("Cash", "right"),
            ("Realized P&L", "right"),
            ("Shorting", "left"),
            ("Trading", "left"),
        ),
    )
    for a in found:
        table.add_row(
            a.id,
            _money(a.cash),
            _pnl(a.realized_pl),
            "yes" if a.shorting_enabled else "no",
            "[red]blocked[/]" if a.trading_blocked else "allowed",
        )
    if not found:
        table.caption = "no accounts"
    Console().print(table)


def deposit(
    account_id: Annotated[str, typer.Argument(help="The account's id.")],
    amount: Annotated[str, typer.Argument(help="Cash to add, e.g. 5000.")],
    api: ApiOption = None,
    key_id: AdminKeyIdOption = None,
    secret: AdminSecretOption = None,
) -> None:
    """Add cash to an account."""
    cash = parse_decimal("amount", amount, "5000")
    with _client(api, key_id, secret, admin=True) as client:
        done = client.deposit(account_id, cash)
    typer.echo(f"deposited {_money(done.amount)} into account {done.account_id}")


def transfer_in(
    account_id: Annotated[str, typer.Argument(help="The account's id.")],
    symbol: Annotated[str, typer.Argument(help="The asset, e.g. BTC/USD or AAPL.")],
    qty: Annotated[str, typer.Argument(help="Units to add, e.g. 0.5.")],
    price: Annotated[str, typer.Option(help="Cost basis per unit, e.g. 65000.")],
    api: ApiOption = None,
    key_id: AdminKeyIdOption = None,
    secret: AdminSecretOption = None,
) -> None:
    """Transfer units of an asset into an account (coins from a wallet, shares from another
    broker) at a cost basis: the position grows, cash does not move."""
    units = parse_decimal("qty", qty, "0.5")
    cost = parse_decimal("--price", price, "65000")
    with _client(api, key_id, secret, admin=True) as client:
        done = client.deposit_asset(account_id, symbol, units, cost)
    typer.echo(
        f"transferred {fmt_qty(done.qty)} {done.symbol} at {fmt_number(done.price)} "
        f"into account {done.account_id}"
    )


def _trading(found: AccountSummary) -> str:
    if found.trading_blocked:
        return f"trading blocked ({found.blocked_reason or 'no reason given'})"
    return "trading allowed"


def halt(
    account_id: Annotated[str, typer.Argument(help="The account's id.")],
    reason: Annotated[str, typer.Option(help="Why, as the account will see it.")],
    api: ApiOption = None,
    key_id: AdminKeyIdOption = None,
    secret: AdminSecretOption = None,
) -> None:
    """Halt an account: its new orders are refused until `bourse accounts resume`."""
    with _client(api, key_id, secret, admin=True) as client:
        found = client.halt(account_id, reason)
    typer.echo(f"account {found.id}: {_trading(found)}")


def resume(
    account_id: Annotated[str, typer.Argument(help="The account's id.")],
    api: ApiOption = None,
    key_id: AdminKeyIdOption = None,
    secret: AdminSecretOption = None,
) -> None:
    """Resume a halted account (an admin's halt, or the risk kill switch's, which re-arms
    with a fresh daily loss allowance)."""
    with _client(api, key_id, secret, admin=True) as client:
        found = client.resume(account_id)
    typer.echo(f"account {found.id}: {_trading(found)}")
