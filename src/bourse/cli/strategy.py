"""`bourse strategy run`: the signal pipeline, live or as a back-test, and its summary.

    bourse strategy run --file sample:stocks --symbol AAPL --venue hist --fast 10 --slow 50
    bourse strategy run --from 2026-05-01T13:30Z --to 2026-05-01T14:30Z --symbol AAPL --venue nyse
    bourse strategy run --live --symbol AAPL --venue nyse --new-account --duration 60

The summary goes to stdout (a table, or JSON with --json); progress, the new account's key
and logs go to stderr. Ctrl-C ends the intake and still summarizes what was traded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, TextIO

import msgspec
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from bourse.bus import replay as replaying
from bourse.bus.connection import connected
from bourse.cli.common import (
    PROGRESS_THRESHOLD,
    NatsOption,
    nats_url,
    progress_bar,
    run_until_signalled,
)
from bourse.cli.trading import ApiOption, KeyIdOption, SecretOption, parse_decimal
from bourse.client import ApiError, BourseClient
from bourse.errors import ConfigError
from bourse.model.instruments import Instrument, universe_by_symbol
from bourse.model.subjects import check_venue, normalize_symbol
from bourse.strategy.backtest import BacktestSource, FileSource, StreamSource, run_backtest
from bourse.strategy.config import PRICE_SOURCES, RULES, StrategyConfig
from bourse.strategy.live import LiveStrategy, open_account
from bourse.strategy.performance import Summary

_KEYWORDS = ("first", "seq:", "time:")

strategy_app = typer.Typer(
    name="strategy",
    help="Run the signal pipeline (SMA signal, Kelly sizing), live or as a back-test.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(strategy_app)


# ---- arguments ----


def parse_instrument(symbol: str) -> Instrument:
    known = universe_by_symbol()
    normalized = normalize_symbol(symbol)
    if normalized not in known:
        raise ConfigError("--symbol", symbol, f"one of {', '.join(sorted(known))}")
    return known[normalized]


def stream_position(option: str, text: str) -> str:
    """A replay position for --from/--to: `first`, `seq:N`, `time:ISO`, or an ISO time."""
    spec = text.strip()
    if spec.lower() in ("last", "new"):
        raise ConfigError(option, text, "a finished range: first, seq:N or an ISO-8601 time")
    if spec.lower().startswith(_KEYWORDS):
        return spec
    return f"time:{spec}"


def file_time(option: str, text: str) -> int:
    """--from/--to of a file back-test: an ISO-8601 time (UTC unless an offset is given)."""
    spec = text.strip().removeprefix("time:")
    accepted = "an ISO-8601 time such as 2010-01-04 or 2010-01-04T14:30:00Z"
    try:
        position = replaying.parse_start(f"time:{spec}")
    except ConfigError:
        raise ConfigError(option, text, accepted) from None
    return position.time_ns


def choose_mode(live: bool, start: str | None, until: str | None, file: str | None) -> str:
    if live and (start is not None or until is not None or file is not None):
        raise ConfigError(
            "mode", "--live with a range or a file", "--live alone, without --from, --to or --file"
        )
    if live:
        return "live"
    if file is not None:
        return "file"
    if start is not None:
        return "stream"
    if until is not None:
        raise ConfigError("--to", until, "a range that starts with --from")
    raise ConfigError(
        "mode", "none", "one of --live, --from T [--to T] (the MARKET_DATA stream) or --file PATH"
    )


def wants_progress(total: int | None, stderr: TextIO) -> bool:
    if total is None or total <= 0:
        return False
    return stderr.isatty() or total >= PROGRESS_THRESHOLD


# ---- output ----


def _time(ts: int | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _money(value: Decimal) -> str:
    return f"{value:,.2f}"


def _signed(value: Decimal) -> str:
    if value == 0:
        return _money(value)
    colour = "green" if value > 0 else "red"
    return f"[{colour}]{value:+,.2f}[/]"


def _percent(value: Decimal) -> str:
    return f"{value * 100:.2f}%"


def summary_heading(summary: Summary) -> str:
    what = "Back-test" if summary.mode == "backtest" else "Live run"
    seed = f", seed {summary.seed}" if summary.seed is not None else ""
    return f"{what}: {summary.symbol} on {summary.venue} ({summary.source}{seed})"


def summary_table(summary: Summary) -> Table:
    grid = Table(
        box=box.SIMPLE_HEAD,
        show_header=False,
        show_edge=False,
        pad_edge=False,
    )
    grid.add_column()
    grid.add_column(justify="right")
    refused = sum(summary.refused.values())
    rows = (
        ("period", f"{_time(summary.first_ts)} .. {_time(summary.last_ts)}"),
        ("ticks", f"{summary.ticks:,}"),
        ("orders", f"{summary.orders:,}" + (f" ({refused} refused)" if refused else "")),
        ("trades (fills)", f"{summary.trades:,}"),
        (
            "round trips",
            f"{summary.round_trips:,} ({summary.wins} won, {summary.losses} lost; "
            f"{summary.paper_round_trips} more on paper)",
        ),
        ("win rate", _percent(summary.win_rate)),
        ("gross P&L", _signed(summary.gross_pnl)),
        ("fees", _money(summary.fees)),
        ("net P&L", _signed(summary.net_pnl)),
        ("return", _percent(summary.return_)),
        ("max drawdown", f"{_money(summary.max_drawdown)} ({_percent(summary.max_drawdown_pct)})"),
        ("exposure", f"{_percent(summary.exposure)} of the time"),
        ("final position", f"{summary.position:f}"),
        ("equity", f"{_money(summary.initial_equity)} -> {_money(summary.final_equity)}"),
    )
    for name, value in rows:
        grid.add_row(name, value)
    return grid


def fills_table(summary: Summary) -> Table:
    table = Table(title="Fills", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    for name, justify in (
        ("Time UTC", "left"),
        ("Side", "left"),
        ("Qty", "right"),
        ("Price", "right"),
        ("Fee", "right"),
        ("Why", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for fill in summary.fills:
        table.add_row(
            _time(fill.ts),
            fill.side,
            f"{fill.qty:f}",
            f"{fill.price:f}",
            f"{fill.fee:f}",
            fill.reason,
        )
    return table


def print_summary(summary: Summary, *, as_json: bool, show_fills: bool) -> None:
    if as_json:
        typer.echo(msgspec.json.format(msgspec.json.encode(summary), indent=2).decode())
        return
    console = Console()
    console.print(summary_heading(summary), highlight=False, soft_wrap=True)
    console.print(summary_table(summary), highlight=False)
    if show_fills and summary.fills:
        console.print(fills_table(summary), highlight=False)


def _progress(stderr: TextIO) -> contextlib.AbstractContextManager[replaying.OnProgress]:
    return progress_bar("back-test", stderr, lambda total: wants_progress(total, stderr))


# ---- the command ----


@strategy_app.command("run")
def run(
    symbol: Annotated[str, typer.Option("--symbol", help="The instrument to trade, e.g. AAPL.")],
    venue: Annotated[
        str, typer.Option("--venue", help="The venue whose market data drives it, e.g. nyse.")
    ],
    live: Annotated[
        bool, typer.Option("--live", help="Trade live on the running platform.")
    ] = False,
    start: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Back-test from the MARKET_DATA stream from this time (ISO-8601, UTC unless an "
            "offset is given; or first, seq:N); with --file, from this time in the file.",
        ),
    ] = None,
    until: Annotated[
        str | None, typer.Option("--to", help="... until this time (inclusive; or seq:N).")
    ] = None,
    file: Annotated[
        str | None,
        typer.Option("--file", help="Back-test over a CSV/Parquet file, or sample:stocks."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of the simulated slippage (back-test; 0).")
    ] = None,
    rule: Annotated[str, typer.Option("--rule", help="crossover or momentum.")] = "crossover",
    fast: Annotated[int, typer.Option("--fast", help="Fast SMA window, in ticks.")] = 5,
    slow: Annotated[int, typer.Option("--slow", help="Slow SMA window, in ticks.")] = 20,
    threshold_bps: Annotated[
        str, typer.Option("--threshold-bps", help="Band around the crossing, in bps.")
    ] = "0",
    min_change_bps: Annotated[
        str, typer.Option("--min-change-bps", help="momentum: the tick change that confirms.")
    ] = "0",
    price: Annotated[str, typer.Option("--price", help="auto, mid or trade.")] = "auto",
    kelly_cap: Annotated[
        str, typer.Option("--kelly-cap", help="The most of equity ever in the position.")
    ] = "0.25",
    prior_win_rate: Annotated[
        str, typer.Option("--prior-win-rate", help="Kelly prior: the share of trades won.")
    ] = "0.55",
    prior_payoff: Annotated[
        str, typer.Option("--prior-payoff", help="Kelly prior: mean win / mean loss.")
    ] = "1",
    prior_weight: Annotated[
        str, typer.Option("--prior-weight", help="The prior's worth, in trades.")
    ] = "10",
    limit_bps: Annotated[
        str, typer.Option("--limit-bps", help="IOC limits this far through the quote.")
    ] = "25",
    fee_bps: Annotated[str, typer.Option("--fee-bps", help="Back-test fees, in bps.")] = "1",
    slippage_bps: Annotated[
        str, typer.Option("--slippage-bps", help="Back-test slippage, at most (bps).")
    ] = "2",
    cash: Annotated[
        str, typer.Option("--cash", help="Back-test starting cash; a --new-account's deposit.")
    ] = "100000",
    queue_size: Annotated[int, typer.Option("--queue-size", help="Bound of each queue.")] = 1024,
    max_tick_age: Annotated[
        float, typer.Option("--max-tick-age", help="Live: don't trade on older ticks (s).")
    ] = 5.0,
    duration: Annotated[
        float | None, typer.Option("--duration", help="Live: stop after this many seconds.")
    ] = None,
    new_account: Annotated[
        bool, typer.Option("--new-account", help="Live: open an account with the admin key.")
    ] = False,
    admin_key_id: Annotated[
        str | None, typer.Option("--admin-key-id", help="Default: the platform's.")
    ] = None,
    admin_secret: Annotated[
        str | None, typer.Option("--admin-secret", help="The admin key's secret.")
    ] = None,
    nats: NatsOption = None,
    api: ApiOption = None,
    key_id: KeyIdOption = None,
    secret: SecretOption = None,
    show_fills: Annotated[bool, typer.Option("--fills", help="List every fill too.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run the strategy: enrichment -> signal -> Kelly sizing -> execution.

    Back-tests are deterministic: the same data, options and --seed give the same trades.
    """
    mode = choose_mode(live, start, until, file)
    instrument = parse_instrument(symbol)
    check_venue(venue)
    if rule not in RULES:
        raise ConfigError("--rule", rule, " or ".join(RULES))
    if price not in PRICE_SOURCES:
        raise ConfigError("--price", price, ", ".join(PRICE_SOURCES))
    config = StrategyConfig(
        rule=rule,
        fast=fast,
        slow=slow,
        threshold_bps=parse_decimal("--threshold-bps", threshold_bps, "5"),
        min_change_bps=parse_decimal("--min-change-bps", min_change_bps, "1"),
        price_source=price,
        kelly_cap=parse_decimal("--kelly-cap", kelly_cap, "0.25"),
        prior_win_rate=parse_decimal("--prior-win-rate", prior_win_rate, "0.55"),
        prior_payoff=parse_decimal("--prior-payoff", prior_payoff, "1.2"),
        prior_weight=parse_decimal("--prior-weight", prior_weight, "10"),
        limit_bps=parse_decimal("--limit-bps", limit_bps, "25"),
        fee_bps=parse_decimal("--fee-bps", fee_bps, "1"),
        slippage_bps=parse_decimal("--slippage-bps", slippage_bps, "2"),
        max_tick_age_s=max_tick_age,
        queue_size=queue_size,
    ).check()
    money = parse_decimal("--cash", cash, "100000")
    if money <= 0:
        raise ConfigError("--cash", cash, "a positive amount, e.g. 100000")
    if mode == "live":
        if seed is not None:
            raise ConfigError("--seed", seed, "a seed only with a back-test (--from or --file)")
        summary = _run_live(
            config, instrument, venue, money, duration, new_account,
            (admin_key_id, admin_secret), nats, api, key_id, secret,
        )  # fmt: skip
    else:
        if duration is not None or new_account:
            raise ConfigError(
                "--duration/--new-account", "with a back-test", "them only with --live"
            )
        summary = _run_backtest(
            config, instrument, venue, money, seed or 0, mode, start, until, file, nats
        )
    print_summary(summary, as_json=as_json, show_fills=show_fills)


def _run_backtest(
    config: StrategyConfig,
    instrument: Instrument,
    venue: str,
    cash: Decimal,
    seed: int,
    mode: str,
    start: str | None,
    until: str | None,
    file: str | None,
    nats: str | None,
) -> Summary:
    stderr = sys.stderr
    if mode == "file":
        assert file is not None
        loaded = FileSource.load(
            file,
            venue=venue,
            start_ns=None if start is None else file_time("--from", start),
            end_ns=None if until is None else file_time("--to", until),
        )
        loaded.check(instrument.symbol, venue)
        source: BacktestSource = loaded

        async def from_file(stop: asyncio.Event) -> Summary:
            with _progress(stderr) as on_progress:
                return await run_backtest(
                    config, instrument, source, venue=venue, cash=cash, seed=seed,
                    on_progress=on_progress, stop=stop,
                )  # fmt: skip

        return run_until_signalled(from_file)

    assert start is not None
    spec = replaying.replay_spec(
        stream_position("--from", start),
        None if until is None else stream_position("--to", until),
        symbols=[instrument.symbol],
    )
    url = nats_url(nats)

    async def from_stream(stop: asyncio.Event) -> Summary:
        async with connected(url, name="bourse-strategy") as nc:
            with _progress(stderr) as on_progress:
                return await run_backtest(
                    config, instrument, StreamSource(nc, spec), venue=venue, cash=cash,
                    seed=seed, on_progress=on_progress, stop=stop,
                )  # fmt: skip

    return run_until_signalled(from_stream)


def _run_live(
    config: StrategyConfig,
    instrument: Instrument,
    venue: str,
    cash: Decimal,
    duration: float | None,
    new_account: bool,
    admin_key: tuple[str | None, str | None],
    nats: str | None,
    api: str | None,
    key_id: str | None,
    secret: str | None,
) -> Summary:
    if duration is not None and duration <= 0:
        raise ConfigError("--duration", duration, "a positive number of seconds")
    if (admin_key[0] is None) != (admin_key[1] is None):
        raise ConfigError(
            "admin key", "only one of --admin-key-id/--admin-secret", "both, or neither"
        )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # no line per request
    url = nats_url(nats)
    try:
        if new_account:
            if key_id is not None or secret is not None:
                raise ConfigError("--new-account", "with --key-id/--secret", "one or the other")
            with BourseClient.connect(api, *admin_key, admin=True) as admin:
                made = open_account(admin, cash)
                api = admin.url
            typer.echo(
                f"opened account {made.account_id} with {cash:,f}: key id {made.key_id}, "
                f"secret {made.secret} (shown once)",
                err=True,
            )
            key_id, secret = made.key_id, made.secret
        client = BourseClient.connect(api, key_id, secret)
        with client:
            try:
                client.asset(instrument.symbol)
            except ApiError as error:
                if error.status == 404:
                    raise ConfigError(
                        "--symbol", instrument.symbol, "a symbol the exchange trades"
                    ) from None
                raise

            async def main(stop: asyncio.Event) -> Summary:
                async with connected(url, name="bourse-strategy") as nc:
                    strategy = LiveStrategy(nc, client, config, instrument, venue=venue)
                    timer = None
                    if duration is not None:
                        timer = asyncio.get_running_loop().call_later(duration, stop.set)
                    try:
                        return await strategy.run(stop)
                    finally:
                        if timer is not None:
                            timer.cancel()

            return run_until_signalled(main)
    except ApiError as error:
        typer.echo(f"bourse: error: {error}", err=True)
        raise typer.Exit(1) from None
