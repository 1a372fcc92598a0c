# tether worker/CLI image. Used by docker-compose.yml (services `worker` and `fleet`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
COPY streams ./streams
# xds-protos ships an older copy of opentelemetry/proto: opentelemetry-proto's must win
RUN pip install . \
 && pip install --force-reinstall --no-deps "opentelemetry-proto==$(python -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')" \
 && useradd --create-home --uid 10001 tether

USER tether
CMD ["tether", "worker"]
