# tether worker/CLI image. Used by docker-compose.yml (services `keys`, `worker` and `fleet`) and
# by deploy/k8s/. Runs as the non-root user `tether` (uid 10001), which owns every directory it
# writes: its home (TETHER_HOME, faust's data directory, development keys) and the mount points
# of the compose volumes (a new named volume takes the ownership of the image's directory).
# tests/unit/test_dockerfile_user.py checks this without an engine, as a real non-root user.
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
 && groupadd --gid 10001 tether \
 && useradd --create-home --home-dir /home/tether --uid 10001 --gid 10001 tether \
 && mkdir -p /home/tether/.tether /run/tether/signing /run/tether/jwks \
 && chown -R 10001:10001 /home/tether /run/tether \
 && chmod 700 /run/tether/signing

# State lives under the user's home, never in /app (root's, read-only to the user).
ENV HOME=/home/tether \
    TETHER_HOME=/home/tether/.tether
WORKDIR /home/tether
USER 10001:10001
# /metrics, /healthz and /readyz of `tether worker` (TETHER_METRICS_ADDR; docs/monitoring.md)
EXPOSE 9464
CMD ["tether", "worker"]
