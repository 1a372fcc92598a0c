"""The one settings object: flags and ``TETHER_*`` environment variables (nothing else reads env)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tether.core.config import DetectionConfig, StateLimits, check_codes
from tether.kafka_settings import KafkaSettings
from tether.models.common import Severity
from tether.models.outputs import Response


def _limit(name: str) -> str | None:
    """The description of a ``StateLimits`` cap (one text for the setting and the core)."""
    return StateLimits.model_fields[name].description


RISK_TIERS: Final = frozenset({"low", "default", "high"})
"""The risk tiers a gateway names in ``Watcher.is_revoked(tier=)``."""


class Settings(BaseSettings):
    """tether's configuration. Every field can be set as ``TETHER_<FIELD>`` (upper case).

    Its sections (detection, kafka, redis, signing, sources, worker, watcher, and the internal
    tuning knobs) are declared in ``tether.settings_reference.SECTIONS``, which generates the
    reference, docs/configuration.md (``tether settings doc``). A new setting needs a
    description and a section there; the tests say so."""

    model_config = SettingsConfigDict(
        env_prefix="TETHER_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    # detection
    grace_s: float = Field(5.0, ge=0, description="event-time grace for late events")
    max_chain_length: int = Field(3, ge=1, description="delegation hops allowed from the initiator")
    shadow: bool = Field(False, description="report findings, revoke nothing")
    credential_shared_across_workflows: bool = Field(
        True,
        description="disable for SPIRE-style cached SVIDs shared by design: sharing is then "
        "allowed, and a completion revokes a shared credential only once no other live "
        "workflow of its subject uses it",
    )
    # per-code tuning (docs/tuning.md); the tuning file wins for the codes it names
    tuning: Path | None = Field(
        None,
        description="the tuning file (YAML, docs/tuning.md): per code enabled, severity, "
        "response, shadow, and scoped exceptions; the worker re-reads it when it changes",
    )
    tuning_poll_s: float = Field(
        2.0, gt=0, description="how often the worker checks the tuning file for a change"
    )
    disabled: Annotated[frozenset[str], NoDecode] = Field(
        frozenset(), description="finding codes that never fire (code,code or a JSON list)"
    )
    severity: Annotated[dict[str, Severity], NoDecode] = Field(
        default_factory=dict,
        description="severity per code: code=high,code=low (or a JSON object)",
    )
    response: Annotated[dict[str, tuple[Response, ...]], NoDecode] = Field(
        default_factory=dict,
        description="response per code: code=revoke_token|quarantine_workload,code= (empty: "
        "alert only; or a JSON object)",
    )
    shadow_codes: Annotated[frozenset[str], NoDecode] = Field(
        frozenset(), description="finding codes reported but never enforced (code,code)"
    )
    policy_dir: Path | None = Field(None, description="Cedar policies; default: a built-in pack")
    policy_pack: str = Field(
        "default", description="built-in pack when no policy_dir: default | strict"
    )
    policy: bool = Field(True, description="evaluate per-call Cedar policy")
    # per-workflow state caps (tether.core.config.StateLimits; passing one raises
    # workflow_limits_exceeded, except limit_event_id_bytes, which forgets the oldest ids)
    limit_state_bytes: int = Field(128 * 1024, ge=4096, description=_limit("state_bytes"))
    limit_event_id_bytes: int = Field(64 * 1024, ge=1024, description=_limit("event_id_bytes"))
    limit_pending: int = Field(256, ge=1, description=_limit("pending"))
    limit_tokens: int = Field(1024, ge=1, description=_limit("tokens"))
    limit_delegations: int = Field(256, ge=1, description=_limit("delegations"))
    limit_recent: int = Field(1024, ge=1, description=_limit("recent"))
    limit_token_pairs: int = Field(64, ge=2, description=_limit("token_pairs"))
    limit_token_workflows: int = Field(256, ge=2, description=_limit("token_workflows"))
    # streaming
    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers (HOST:PORT[,...])"
    )
    kafka: KafkaSettings = Field(
        default_factory=KafkaSettings,
        description="how every Kafka client authenticates, and topic replication "
        "(TETHER_KAFKA__<FIELD>; docs/kafka-security.md)",
    )
    redis_url: SecretStr = Field(
        SecretStr("redis://127.0.0.1:6379/0"),
        description="the revocation registry (the worker writes, gateways may read)",
    )
    topic_prefix: str = Field("tether.", description="prefix of every topic name")
    partitions: int = Field(
        6, ge=1, description="partitions of tether's topics (tables are co-partitioned with them)"
    )
    max_skew_s: float = Field(
        300.0, ge=0, description="events dated further ahead are dead letters"
    )
    max_ahead_s: float = Field(
        0.5,
        ge=0,
        description="the streaming worker's event time (its watermark) never runs further ahead "
        "of its wall clock than this: an event dated later (but within max_skew_s) is applied, "
        "yet moves event time only to now + max_ahead_s, so it cannot fire other workflows' "
        "waiting checks early; keep it well below grace_s",
    )
    heartbeat_s: float = Field(1.0, gt=0, description="seconds between a worker's heartbeats")
    output_reject_min_bytes: int = Field(
        512,
        ge=1,
        description="an output record the broker refuses for good (too large for its topic, "
        "invalid) is dead-lettered (reason output_rejected) and the pipeline goes on, if the "
        "topic's max.message.bytes is at least this; a topic whose limit is lower refuses "
        "everything (unwritable): its records are held and retried (revocations always are)",
    )
    ledger: bool = Field(
        True,
        description="run the revocation ledger: republishes a target's longest revocation when a "
        "shorter one follows it on the compacted topic, and tombstones revocations past their "
        "not_after",
    )
    tombstone_after_s: float = Field(
        300.0,
        ge=0,
        description="the ledger tombstones a revocation this long (wall time) after its not_after",
    )
    audit_chain: bool = Field(
        True,
        description="link every decision to the one before it on its decisions partition (a "
        "'chain' member: docs/audit.md) and publish signed checkpoints of each chain's head",
    )
    audit_checkpoint_s: float = Field(
        5.0,
        gt=0,
        description="seconds between a worker's signed checkpoints of the chain heads it writes "
        "(only partitions with new decisions): records after the last checkpoint can be cut "
        "from a partition's tail unnoticed",
    )
    decisions_retention_ms: int = Field(
        7 * 24 * 3600 * 1000,
        ge=-1,
        description="retention.ms of the decisions and audit-checkpoints topics (-1: keep for "
        "ever), set by tether topics create, also on existing topics",
    )
    staleness_s: float = Field(5.0, gt=0, description="watcher fails closed beyond this")
    fail_closed_tiers: frozenset[str] = Field(
        frozenset({"high", "default"}),
        description="watcher risk tiers that deny when the feed is stale (others allow, counted); "
        "a subset of low, default, high: any other name is refused at start-up",
    )
    max_input_lag_s: float = Field(
        30.0,
        gt=0,
        description="watcher: the feed is stale while a worker's heartbeat reports more input lag",
    )
    registry_staleness_s: float = Field(
        10.0,
        gt=0,
        description="gateways trust a Redis 'not revoked' only while the registry sync has "
        "vouched for every partition within this many seconds (and every sync mark says synced)",
    )
    registry_sync_timeout_s: float = Field(
        5.0,
        gt=0,
        description="connect and read timeout of the registry sync's Redis calls; longer than a "
        "gateway's 1 s lookup timeout because the sync is off the request path and must keep "
        "writing over a slow link (at 1 s it wrote nothing with a 1 s round trip)",
    )
    watcher_hold_s: float = Field(
        60.0,
        ge=0,
        description="least time a watcher waits for an unknown signing key to reach the JWKS "
        "before giving a record up (and then only after a JWKS read that succeeded since)",
    )
    watcher_hold_max: int = Field(
        100_000,
        ge=1,
        description="records a watcher holds at most while their signing key is unknown; "
        "beyond it the partition is paused and read again later (nothing is dropped)",
    )
    app_id: str | None = Field(
        None, description="faust app id = consumer group; default: <topic_prefix>monitor"
    )
    worker_id: str | None = Field(
        None,
        description="stable, unique name of this worker: also its static consumer-group "
        "membership, so a restarted worker takes its partitions straight back (default: "
        "host-pid, dynamic membership)",
    )
    web_port: int | None = Field(None, description="faust web server port; unset disables it")
    web_host: str = Field(
        "127.0.0.1", description="address the faust web server binds (0.0.0.0: every interface)"
    )
    metrics_addr: str | None = Field(
        None,
        description="HOST:PORT of the process's /metrics, /healthz and /readyz endpoint; unset: "
        "127.0.0.1 and the process's own port (worker 9464, gateway 9465, watch 9466, ssf 9467, "
        "alerts 9468, console 9469, ingest 9470, ocsf-forward 9471, registry-sync 9472; "
        "docs/monitoring.md); off "
        "disables it",
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="text, or json: one JSON object per log line (ts, level, logger, message, "
        "worker, partition, workflow, code when known)",
    )
    batch_max: int = Field(1000, ge=1, description="records per processing batch")
    tick_s: float = Field(0.2, gt=0, description="processing-time backstop interval")
    state_epoch_ms: float = Field(
        50.0,
        ge=0,
        le=5000,
        description="how often the worker writes changed state to the tables' changelogs: "
        "once per epoch instead of once per batch (outputs never wait for it; input offsets "
        "do); 0 writes after every batch",
    )
    fetch_wait_ms: int = Field(
        5,
        ge=0,
        le=1000,
        description="how long the broker may hold the worker's fetch for input to reach 64 KiB: "
        "the latency a record can gain while the stream is quiet, against fewer, larger "
        "batches (less CPU per event) while it is busy",
    )
    output_linger_ms: float = Field(
        10.0,
        ge=0,
        le=1000,
        description="how long the worker's routine outputs (decisions, credential uses, dead "
        "letters, state) may wait to share a request to the broker: librdkafka sends a request "
        "per partition, so a short wait sends several times more of them; revocations, "
        "findings and heartbeats go through a producer of their own and never wait",
    )
    gc_log_ms: float = Field(
        50.0,
        ge=0,
        description="log every garbage collection that stops the worker this long or longer "
        "(a latency spike on every detection in flight); 0 logs none",
    )
    gc_freeze: bool = Field(
        True,
        description="freeze what survives each full garbage collection out of later ones (the "
        "worker's sessions and tokens: a full collection otherwise walks all of them)",
    )
    gc_thaw_s: float = Field(
        600.0,
        ge=0,
        description="with gc_freeze, hand frozen objects back to the collector this often, so "
        "that one full collection reclaims any reference cycle that died frozen; 0 never",
    )
    malloc_trim_s: float = Field(
        10.0,
        ge=0,
        description="how often the worker returns memory it has freed to the operating system "
        "(glibc's malloc_trim, on a thread of its own); 0 never",
    )
    trace: bool = Field(False, description="log every acknowledged input position (debugging)")
    token_hold_s: float = Field(
        300.0,
        ge=0,
        description="keep an expired token this long (wall time) after its last use, for uses "
        "that arrive late from a lagging partition or worker",
    )
    session_timeout_s: float = Field(
        6.0, ge=2, description="how fast a dead worker's partitions move to the others"
    )
    # signed revocations (docs/contract.md "Signed revocations")
    issuer: str = Field(
        "urn:tether:monitor", min_length=1, description="iss of the SETs signed and accepted"
    )
    signing_key: Path | None = Field(
        None, description="private JWK the worker signs with; unset: a dev key under <home>/keys"
    )
    signing_alg: Literal["RS256", "ES256"] | None = Field(
        None, description="required alg of the signing key; unset: the key's (dev keys: RS256)"
    )
    jwks: str | None = Field(
        None, description="JWKS path or http(s) URL watchers verify with; unset: <home>/keys"
    )
    jwks_refetch_s: float = Field(
        10.0, gt=0, description="at most one JWKS reread per this many seconds (unknown kid)"
    )
    jwks_max_age_s: float = Field(
        3600.0, gt=0, description="reread the JWKS this often (a removed key stops verifying)"
    )
    jwks_allow_http: bool = Field(
        False, description="accept a JWKS URL over plain http:// (anyone on the path can swap keys)"
    )
    jwks_require_iss: bool = Field(
        False,
        description="verify only with JWKS keys that carry an 'iss' member naming the issuer "
        "(a key with 'iss' is always bound to it; this also refuses keys without one)",
    )
    # operator actions (docs/operators.md): tether revoke / tether reinstate
    operator_jwks: str | None = Field(
        None,
        description="JWKS path or https URL of the operators' public keys: watchers, the "
        "registry sync, the ledger and SSF accept operators' revocations and reinstatements "
        "only from these (each bound to operator_issuer); unset: <home>/operator/jwks.json if "
        "it exists, else no operator is trusted",
    )
    operator_issuer: str = Field(
        "urn:tether:operator",
        min_length=1,
        description="iss of operators' SETs; must differ from issuer (the worker's)",
    )
    operator_key: Path | None = Field(
        None,
        description="private JWK `tether revoke`/`tether reinstate` sign with; unset: "
        "<home>/operator/operator.jwk.json",
    )
    operator_name: str | None = Field(
        None,
        description="who the operator actions name when --by is not given; unset: the "
        "operator key's 'operator' member, else $USER",
    )
    operator_revoke_s: float = Field(
        86400.0, gt=0, description="how long `tether revoke` revokes when --until is not given"
    )
    operator_window_s: float = Field(
        7 * 86400.0,
        gt=0,
        description="a reinstatement's lifetime (appliers remember the lift that long) and the "
        "longest `tether revoke --until` accepts",
    )
    gil_switch_ms: float = Field(
        1.0,
        gt=0,
        le=100,
        description="the worker's GIL switch interval (Python's default is 5 ms): the longest "
        "a thread waits for the GIL at each hand-off between the worker's threads",
    )
    signing_processes: int = Field(
        1,
        ge=0,
        le=8,
        description="processes a worker signs revocations in (RSA signing holds the GIL: a "
        "process of its own keeps it off the event loop); 0 signs on a thread in the worker",
    )
    signing_inline_max: int = Field(
        16,
        ge=0,
        le=1000,
        description="the first this many revocations a batch's findings raise are signed on "
        "the event loop and published as soon as the record that raised them is applied (no "
        "round trip to the signing process, which waits for a core on a busy host, and no wait "
        "for the rest of the batch); task-completion revocations and the rest of a burst are "
        "signed in the signing processes while the next batch is applied; 0 sends every "
        "revocation to the signing processes",
    )
    token_issuer: str | None = Field(
        None,
        description="iss of jwt_id subjects in token SETs when the revocation does not carry "
        "the token's own issuer (the watched tokens' STS)",
    )
    set_audience: str = Field(
        "urn:tether:revocations",
        min_length=1,
        description="aud of every SET on the revocations topic (the enforcement points that "
        "read it); `tether ssf` signs each stream's SETs for that stream's audience instead",
    )
    home: Path = Field(Path(".tether"), description="tether's local state: development keys")
    # authenticated telemetry (docs/SECURITY.md)
    sources: Path | None = Field(
        None, description="the source registry (sources.yaml); unset: inputs are unauthenticated"
    )
    sources_mode: Literal["enforce", "audit"] = Field(
        "enforce", description="when sources.yaml names no mode: enforce refuses, audit labels"
    )
    trusted_issuers: dict[str, str] = Field(
        default_factory=dict,
        description="issuer -> JWKS path or https URL: presented tokens (JWTs) are verified "
        "against these (JSON in TETHER_TRUSTED_ISSUERS)",
    )

    @field_validator("fail_closed_tiers")
    @classmethod
    def _known_tiers(cls, tiers: frozenset[str]) -> frozenset[str]:
        """A misspelt tier (``HIGH``, ``critical``) would fail open without a word: refuse it."""
        unknown = sorted(tiers - RISK_TIERS)
        if unknown:
            raise ValueError(
                f"unknown risk tier(s) {unknown}; the tiers are {sorted(RISK_TIERS)} (lower case)"
            )
        return tiers

    @field_validator("disabled", "shadow_codes", mode="before")
    @classmethod
    def _code_list(cls, value: object) -> object:
        from tether.tuning import env_codes  # noqa: PLC0415  # tuning imports the core only

        return env_codes(value)

    @field_validator("severity", mode="before")
    @classmethod
    def _severity_map(cls, value: object) -> object:
        from tether.tuning import env_mapping  # noqa: PLC0415

        return env_mapping(value, "severity")

    @field_validator("response", mode="before")
    @classmethod
    def _response_map(cls, value: object) -> object:
        from tether.tuning import env_mapping  # noqa: PLC0415

        return env_mapping(value, "response")

    @field_validator("disabled", "shadow_codes", "severity", "response")
    @classmethod
    def _known_codes(cls, value: object) -> object:
        """A misspelt code would leave it enforced without a word: refuse it."""
        check_codes(value)
        return value

    def detection(self, *, tuning: bool = True, **overrides: object) -> DetectionConfig:
        """The core's configuration from these settings (plus explicit overrides), tuned by
        the tuning file when one is set (``tuning=False``: the environment's alone).

        Raises:
            tether.tuning.TuningError: the tuning file is unreadable or invalid.
        """
        disabled = set(self.disabled)
        if not self.credential_shared_across_workflows:
            disabled.add("credential_shared_across_workflows")
        values: dict[str, object] = {
            "grace_s": self.grace_s,
            "max_chain_length": self.max_chain_length,
            "shadow": self.shadow,
            "disabled": frozenset(disabled),
            "severity": dict(self.severity),
            "response": dict(self.response),
            "shadow_codes": self.shadow_codes,
            "limits": StateLimits(
                state_bytes=self.limit_state_bytes,
                event_id_bytes=self.limit_event_id_bytes,
                pending=self.limit_pending,
                tokens=self.limit_tokens,
                delegations=self.limit_delegations,
                recent=self.limit_recent,
                token_pairs=self.limit_token_pairs,
                token_workflows=self.limit_token_workflows,
            ),
        }
        values.update(overrides)
        from tether.tuning import load_tuning, revision  # noqa: PLC0415

        cfg = DetectionConfig.model_validate(values)
        rev = revision(cfg, None)
        if rev is not None and cfg.tuning_revision is None:
            cfg = cfg.model_copy(update={"tuning_revision": f"env@{rev}"})
        if tuning and self.tuning is not None:
            cfg = load_tuning(self.tuning, cfg)
        return cfg

    @staticmethod
    def misspelt_tuning() -> list[str]:
        """``TETHER_*`` variables that are no setting but look like a tuning one
        (``TETHER_DISABLE``, ``TETHER_SEVERITIES``, ``TETHER_TUNING_FILE``), each with the
        setting meant: the environment would otherwise ignore them without a word."""
        import difflib  # noqa: PLC0415
        import os  # noqa: PLC0415

        tuning = [
            f"TETHER_{n.upper()}"
            for n in (
                "disabled",
                "severity",
                "response",
                "shadow",
                "shadow_codes",
                "tuning",
                "tuning_poll_s",
                "credential_shared_across_workflows",
            )
        ]
        known = {f"TETHER_{n.upper()}" for n in Settings.model_fields}
        out = []
        for name in sorted(os.environ):
            upper = name.upper()
            if not upper.startswith("TETHER_") or upper in known or "__" in upper:
                continue
            close = difflib.get_close_matches(upper, tuning, n=1, cutoff=0.8)
            near = close or [t for t in tuning if upper.startswith(t) or t.startswith(upper)]
            if near:
                out.append(f"{name} is not a setting: did you mean {near[0]}?")
        return out

    @property
    def group_id(self) -> str:
        """The workers' consumer group: pipelines with different topic prefixes never share one."""
        return self.app_id or f"{self.topic_prefix}monitor"

    def topic(self, name: str) -> str:
        """A topic name with the configured prefix (``intents`` -> ``tether.intents``)."""
        return f"{self.topic_prefix}{name}"
