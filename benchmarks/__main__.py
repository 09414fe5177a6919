"""`make bench`: run every benchmark and print its figures."""

from __future__ import annotations

import asyncio
import json
import sys

from benchmarks import registry


def main() -> int:
    names = sys.argv[1:] or list(registry())
    for name in names:
        result = asyncio.run(registry()[name](False))
        print(json.dumps(result, indent=2))
        verdict = "met" if result["met"] else "NOT met"
        print(f"{name}: ratio {result['ratio']:.2f} vs target {result['target']} -> {verdict}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
