#!/usr/bin/env bash
# Build, once, an OpenTelemetry Collector with the OTLP receiver and the Kafka exporter, using
# the Collector builder (ocb) from the Go module proxy, and print the binary's path.
# The binary is cached at .services/otelcol/otelcol-tether (delete it to rebuild). Building
# takes minutes and both cores: `make otel-collector-e2e` runs it, `make test` never does.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="$ROOT/.services/otelcol"
BIN="$OUT/otelcol-tether"
CORE=v0.165.0     # collector core and builder (goes with contrib v0.165.1)
CONTRIB=v0.165.1

if [ -x "$BIN" ]; then
  echo "$BIN"
  exit 0
fi
command -v go >/dev/null || { echo "otel-collector.sh: Go is needed to build the Collector" >&2; exit 1; }
mkdir -p "$OUT/bin"
echo "building the Collector builder $CORE ..." >&2
GOBIN="$OUT/bin" go install "go.opentelemetry.io/collector/cmd/builder@$CORE" >&2
cat > "$OUT/builder-config.yaml" <<YAML
dist:
  name: otelcol-tether
  description: tether's test Collector (OTLP receiver, Kafka exporter)
  output_path: $OUT/build
receivers:
  - gomod: go.opentelemetry.io/collector/receiver/otlpreceiver $CORE
exporters:
  - gomod: github.com/open-telemetry/opentelemetry-collector-contrib/exporter/kafkaexporter $CONTRIB
YAML
echo "building otelcol-tether (OTLP receiver $CORE, Kafka exporter $CONTRIB) ..." >&2
"$OUT/bin/builder" --config "$OUT/builder-config.yaml" >&2
cp "$OUT/build/otelcol-tether" "$BIN"
echo "$BIN"
