"""`bourse bench dashboard`: the dashboard's frame rate under 2,000 market-data updates per
second, against the same page with market data paused, in the same run.

A whole platform runs in this process with its own feed off (`bourse up --rate 0`); headless
chromium (Debian's, `/usr/bin/chromium`) opens the dashboard at 1280×800 and signs in with the
demo keys. The page measures itself: it counts `requestAnimationFrame` callbacks over the
window and keeps the longest gap between two (the longest frame). First with no market data
(the idle figure), then with the simulator publishing 2,000 messages per second on `md.>`
(quotes and trades over 7 symbols and 4 venues; the market makers and analytics add their
own). The page receives them through `/dashboard/ws` and draws the watchlist, venues, chart,
book and tape as they change.

Target: the loaded frame rate is at least 0.8× the idle one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from benchmarks import Result, at_least

TARGET = 0.8
RATE = 2000.0  # market-data messages per second
CHROMIUM = "/usr/bin/chromium"

# Runs in the page: frames per second and the longest frame over `seconds`, and how many
# market-data messages the page applied meanwhile.
_MEASURE = """(seconds) => new Promise((resolve) => {
  const market = window.bourse.market;
  const messagesBefore = market.messages;
  const start = performance.now();
  let last = start;
  let frames = 0;
  let longest = 0;
  function tick(now) {
    frames += 1;
    longest = Math.max(longest, now - last);
    last = now;
    if (now - start < seconds * 1000) {
      requestAnimationFrame(tick);
    } else {
      const elapsed = (now - start) / 1000;
      resolve({fps: frames / elapsed, longest_frame_ms: longest, seconds: elapsed,
               messages: market.messages - messagesBefore});
    }
  }
  requestAnimationFrame(tick);
})"""


def _chromium() -> str:
    found = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if found is None:
        raise SystemExit("the dashboard benchmark needs chromium: apt-get install chromium")
    return found


async def run(quick: bool) -> Result:
    from playwright.async_api import async_playwright

    from bourse.feed.runner import FeedRunner, simulated_batches
    from bourse.feed.simulator import Simulator
    from bourse.model.instruments import DEFAULT_UNIVERSE
    from bourse.platform import Platform, PlatformConfig

    seconds = 5.0 if quick else 30.0
    executable = _chromium()
    with TemporaryDirectory(prefix="bourse-bench-dashboard-") as home:
        platform = Platform(PlatformConfig(home=Path(home), api_port=0, feed_rate=0))
        await platform.start()
        feed: FeedRunner | None = None
        feed_task: asyncio.Task[Any] | None = None
        try:
            assert platform.gateway is not None and platform.nc is not None
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=executable)
                page = await browser.new_page(viewport={"width": 1280, "height": 800})
                await page.goto(platform.gateway.url)
                await page.click("#use-demo")
                await page.click("#s-submit")
                await page.wait_for_selector("body[data-ready=true]")
                await page.wait_for_selector("#md-state[data-state=on]")
                idle: dict[str, Any] = await page.evaluate(_MEASURE, seconds)

                simulator = Simulator(DEFAULT_UNIVERSE, seed=0)
                feed = FeedRunner(platform.nc, simulated_batches(simulator, rate=RATE))
                feed_task = asyncio.create_task(feed.run())
                await page.wait_for_function("window.bourse.market.messages > 1000")
                published_before, started = feed.stats.messages, time.monotonic()
                loaded: dict[str, Any] = await page.evaluate(_MEASURE, seconds)
                published = (feed.stats.messages - published_before) / (time.monotonic() - started)
                await browser.close()
        finally:
            if feed is not None:
                feed.stop()
            if feed_task is not None:
                with contextlib.suppress(Exception):
                    await feed_task
            await platform.stop()
    ratio = at_least(loaded["fps"] / idle["fps"]) if idle["fps"] else 0.0
    return {
        "name": "dashboard",
        "ratio": ratio,
        "target": TARGET,
        "met": ratio >= TARGET and published >= 0.9 * RATE,
        "updates_per_s": {"target": RATE, "published": round(published, 1)},
        "page_messages_per_s": round(loaded["messages"] / loaded["seconds"], 1),
        "loaded": {k: round(v, 2) for k, v in loaded.items()},
        "idle": {k: round(v, 2) for k, v in idle.items()},
        "seconds": seconds,
    }


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(asyncio.run(run("--quick" in sys.argv)), indent=2))
