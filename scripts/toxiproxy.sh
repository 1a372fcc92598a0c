#!/usr/bin/env bash
# Build, once, Toxiproxy (Shopify's fault-injecting TCP proxy) from the Go module proxy, and print
# the server binary's path. The network fault tests (`make faults-net`, tests/fault/test_net_*.py)
# put it between the worker and the broker, and between the registry sync and Redis.
#
# The binary is cached at .services/bin/toxiproxy-server-<version> (delete it to rebuild); a
# build takes about a minute of both cores. Needs Go (>= 1.17; /usr/local/go/bin is searched
# too). TOXIPROXY_VERSION overrides the version (the Go module proxy served v2.3.0 and v2.5.0).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VERSION=${TOXIPROXY_VERSION:-v2.5.0}
OUT="$ROOT/.services/bin"
BIN="$OUT/toxiproxy-server-$VERSION"

if [ -x "$BIN" ]; then
  echo "$BIN"
  exit 0
fi
GO=$(command -v go || true)
[ -n "$GO" ] || { [ -x /usr/local/go/bin/go ] && GO=/usr/local/go/bin/go; }
[ -n "$GO" ] || { echo "toxiproxy.sh: Go is needed to build Toxiproxy" >&2; exit 1; }
mkdir -p "$OUT"
BUILD=$(mktemp -d)
trap 'rm -rf "$BUILD"' EXIT
echo "building Toxiproxy $VERSION from the Go module proxy ..." >&2
GOBIN="$BUILD" GOFLAGS=-mod=mod "$GO" install "github.com/Shopify/toxiproxy/v2/cmd/server@$VERSION" >&2
mv "$BUILD/server" "$BIN.tmp"
mv "$BIN.tmp" "$BIN"
echo "$BIN"
