"""Schemathesis over the gateway's own OpenAPI: no generated request gets a 5xx.

The exchange runs in the test's event loop and schemathesis is synchronous, so it runs in a
thread against `exchange.url` (the loop keeps serving meanwhile): every operation, with data
that fits the schema and, where the schema can be violated, data that does not; a bounded,
derandomized number of examples each, so a run is repeatable and takes seconds.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import hypothesis
import requests
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.gateway.conftest import ExchangeStack
from tests.gateway.test_orders_api import limit

EXAMPLES_PER_OPERATION = 30


@dataclass
class Run:
    operations: list[str] = field(default_factory=list)
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def _can_be_invalid(operation: schemathesis.APIOperation) -> bool:
    # Path parameters and the key headers are plain strings: only a body or query parameters
    # can break the schema (otherwise Hypothesis searches at length and gives up).
    return len(operation.body) > 0 or len(operation.query) > 0


def _exercise_operation(
    operation: schemathesis.APIOperation,
    mode: GenerationMode,
    *,
    url: str,
    session: requests.Session,
    headers: dict[str, str],
    run: Run,
) -> None:
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    def call(case: schemathesis.Case) -> None:
        response = case.call(base_url=url, session=session, headers=headers, timeout=30)
        run.requests += 1
        run.statuses[response.status_code] = run.statuses.get(response.status_code, 0) + 1
        try:
            case.validate_response(response, checks=[not_a_server_error])
        except Exception as failure:  # collected, so every operation runs; reported at the end
            run.failures.append(
                f"{case.as_curl_command(headers=headers)}\n"
                f"-> {response.status_code} {response.text[:300]}\n{failure}"
            )

    call()


def _exercise(url: str, trader: dict[str, str], admin: dict[str, str]) -> Run:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    run = Run()
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            run.operations.append(operation.label)
            # Admin routes with the admin key, so their handlers run rather than the 403.
            headers = admin if operation.path.startswith("/admin/") else trader
            modes = [GenerationMode.POSITIVE]
            if _can_be_invalid(operation):
                modes.append(GenerationMode.NEGATIVE)
            for mode in modes:
                _exercise_operation(
                    operation, mode, url=url, session=session, headers=headers, run=run
                )
    return run


async def test_no_generated_request_gets_a_server_error(exchange: ExchangeStack) -> None:
    await exchange.reference("AAPL", "190.00")
    await exchange.reference("BTC-USD", "60000.00")
    trader = await exchange.trader("100000", shorting=True)
    # Something to list and cancel, so those routes do more than answer with nothing.
    placed = await trader.http.post("/v2/orders", json=limit("AAPL", "buy", "1", "180.00"))
    assert placed.status_code == 200, placed.text

    run = await asyncio.to_thread(_exercise, exchange.url, trader.headers, exchange.admin.headers)

    print(
        f"\nschemathesis: {run.requests} requests over {len(run.operations)} operations, "
        f"statuses {dict(sorted(run.statuses.items()))}"
    )
    assert len(run.operations) >= 18, run.operations
    assert run.requests >= len(run.operations)
    assert not run.failures, f"{len(run.failures)} server errors:\n\n" + "\n\n".join(
        run.failures[:5]
    )
