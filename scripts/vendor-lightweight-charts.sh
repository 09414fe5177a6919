#!/bin/sh
# Vendor TradingView's lightweight-charts into the dashboard's static files.
#
#   scripts/vendor-lightweight-charts.sh [VERSION]      # default: the version pinned below
#
# Needs npm (and the npm registry) only when run; the dashboard itself loads nothing from the
# network. It copies the standalone production ES module (no dependencies: fancy-canvas is
# bundled in it) with the package's LICENSE, and writes the NOTICE attribution the licence
# asks for. After updating, run the dashboard tests and update the version in docs/dashboard.md.
set -eu
VERSION="${1:-5.2.1}"
HERE="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$HERE/src/bourse/dashboard/static/vendor/lightweight-charts"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

(cd "$WORK" && npm pack --silent "lightweight-charts@$VERSION" >/dev/null && tar xzf lightweight-charts-*.tgz)
mkdir -p "$DEST"
cp "$WORK/package/dist/lightweight-charts.standalone.production.mjs" "$DEST/"
cp "$WORK/package/LICENSE" "$DEST/LICENSE"
cat > "$DEST/NOTICE" <<NOTICE
TradingView Lightweight Charts™
Copyright (c) 2025 TradingView, Inc. https://www.tradingview.com/

Vendored from the npm package lightweight-charts@$VERSION
(dist/lightweight-charts.standalone.production.mjs) by scripts/vendor-lightweight-charts.sh.
NOTICE
echo "$VERSION" > "$DEST/VERSION"
echo "vendored lightweight-charts $VERSION into $DEST"
