"""The alert sinks' configuration (``--config alerts.yaml``), validated before anything starts.

Example::

    sinks:
      - name: soc-webhook            # names the sink's consumer group: its durable position
        type: webhook                # webhook (JSON), slack (incoming webhook), splunk_hec
        url: https://soar.example/hooks/tether
        min_severity: medium         # info, low, medium, high, critical
        rate: {per_minute: 30, burst: 10}
      - name: splunk
        type: splunk_hec
        url: https://splunk.example:8088/services/collector/event
        token_env: SPLUNK_HEC_TOKEN  # the HEC token, read from this environment variable
        format: ocsf                 # tether (the finding as is) or ocsf (Detection Finding)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from tether.models.common import Severity


class RateLimit(BaseModel):
    """A token bucket: ``burst`` alerts at once, refilled at ``per_minute``. Past it, findings
    are counted into one summary per ``summary_s`` instead of one message each."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_minute: float = Field(60.0, gt=0)
    burst: int = Field(20, ge=1)
    summary_s: float = Field(10.0, gt=0)


class SinkConfig(BaseModel):
    """One destination of alerts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    type: Literal["webhook", "slack", "splunk_hec"]
    url: HttpUrl
    min_severity: Severity = "low"
    format: Literal["tether", "ocsf"] = "tether"
    rate: RateLimit = RateLimit()
    token_env: str | None = Field(
        None, description="environment variable holding the Splunk HEC token (or a bearer token)"
    )
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(10.0, gt=0)
    max_backoff_s: float = Field(60.0, gt=0)

    def token(self) -> str | None:
        """The secret named by ``token_env`` (never written in the file itself)."""
        if self.token_env is None:
            return None
        value = os.environ.get(self.token_env)
        if not value:
            raise ValueError(f"sink {self.name}: environment variable {self.token_env} is empty")
        return value


class AlertsConfig(BaseModel):
    """Every sink; names are unique (each is a consumer group)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sinks: list[SinkConfig] = Field(min_length=1)

    def model_post_init(self, context: object, /) -> None:
        names = [s.name for s in self.sinks]
        if len(set(names)) != len(names):
            raise ValueError("sink names must be unique")


def load_alerts_config(path: Path) -> AlertsConfig:
    """Read and validate the YAML file."""
    return AlertsConfig.model_validate(yaml.safe_load(path.read_text()))
