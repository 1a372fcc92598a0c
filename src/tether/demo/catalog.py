"""The synthetic fleet's static world: agent roles, their tools and the task types they run."""

from __future__ import annotations

from dataclasses import dataclass

TRUST_DOMAIN = "acme.example"
ISSUER = "https://sts.acme.example"
SENSITIVITY = ("public", "internal", "confidential", "restricted")
RANK = {level: i for i, level in enumerate(SENSITIVITY)}

#: Scopes no task grant ever holds; attacks draw escalations and amplifications from here.
PRIVILEGED_SCOPES = (
    "iam:admin",
    "secrets:read",
    "payroll:read",
    "prod-db:write",
    "billing:refund",
)

#: Destinations no grant ever lists; exfiltration attacks send data to these.
EXFIL_DESTINATIONS = (
    "paste.attacker.example",
    "s3://exfil-drop-7731",
    "webhook.tunnel.example",
    "203.0.113.66",
)


@dataclass(frozen=True, slots=True)
class Tool:
    """One tool an agent can call, with the scope it needs and where its data goes."""

    name: str
    operation: str
    scope: str
    destination: str
    sensitivities: tuple[str, ...]
    resource: str
    weight: int = 1


@dataclass(frozen=True, slots=True)
class Role:
    """An agent workload: one SPIFFE id, several running instances."""

    name: str
    workload_id: str
    instances: int
    reports_instance: bool = True


@dataclass(frozen=True, slots=True)
class Hop:
    """One delegation hop of a task's chain: who receives it and what it does."""

    role: str
    tools: tuple[Tool, ...]


@dataclass(frozen=True, slots=True)
class Task:
    """A task type: who starts it, the tools of each participant, and its grant's shape."""

    name: str
    short: str
    purpose: str
    initiator: str
    tools: tuple[Tool, ...]
    chain: tuple[Hop, ...]
    max_sensitivity: str
    autonomy: str
    calls: tuple[int, int]
    gap_ms: tuple[int, int]
    weight: int
    unrestricted_tools: float = 0.1
    unrestricted_destinations: float = 0.15
    cleanup: Tool | None = None
    batch: bool = False

    def all_tools(self) -> tuple[Tool, ...]:
        """Every tool any participant of this task may call (the grant's tool list)."""
        extra = (self.cleanup,) if self.cleanup else ()
        return self.tools + tuple(t for hop in self.chain for t in hop.tools) + extra

    def scopes(self) -> list[str]:
        """The grant's scopes: everything the task's tools need."""
        return sorted({t.scope for t in self.all_tools()})

    def hop_scopes(self, first: int, last: int) -> list[str]:
        """Scopes a delegation at hop `first` hands on for hops `first`..`last - 1`."""
        return sorted({t.scope for hop in self.chain[first:last] for t in hop.tools})


def _spiffe(path: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/{path}"


ROLES = {
    r.name: r
    for r in (
        Role("planner", _spiffe("agent/planner"), 4),
        Role("researcher", _spiffe("agent/researcher"), 6),
        Role("summarizer", _spiffe("agent/summarizer"), 6),
        Role("coder", _spiffe("agent/coder"), 3),
        Role("billing-bot", _spiffe("agent/billing-bot"), 2),
        Role("sre-oncall", _spiffe("agent/sre-oncall"), 2),
        Role("etl-runner", _spiffe("batch/etl-runner"), 1, reports_instance=False),
    )
}

_I, _C, _R = ("internal",), ("confidential",), ("restricted",)
_PI, _IC = ("public", "internal"), ("internal", "confidential")

TICKET_READ = Tool(
    "ticket.read", "read", "tickets:read", "zendesk.internal", _IC, "zendesk://tickets/", 3
)
TICKET_UPDATE = Tool(
    "ticket.update", "write", "tickets:write", "zendesk.internal", _I, "zendesk://tickets/"
)
KB_SEARCH = Tool("kb.search", "read", "kb:read", "kb.internal", _PI, "kb://articles/", 2)
CRM_SEARCH = Tool("crm.search", "read", "crm:read", "crm.internal", _C, "crm://accounts/")
LLM_SUMMARIZE = Tool(
    "llm.summarize", "read", "llm:invoke", "llm.internal", _IC, "llm://summaries/", 2
)
TICKET_COMMENT = Tool(
    "ticket.comment", "write", "tickets:comment", "zendesk.internal", _I, "zendesk://tickets/"
)
SHEETS_READ = Tool(
    "sheets.read", "read", "sheets:read", "sheets.internal", _IC, "sheets://finance/q", 2
)
DOCS_WRITE = Tool("docs.write", "write", "docs:write", "docs.internal", _IC, "docs://reports/")
WAREHOUSE_QUERY = Tool(
    "warehouse.query", "read", "warehouse:read", "warehouse.internal", _IC, "warehouse://tables/", 3
)
CHARTS_RENDER = Tool(
    "charts.render", "execute", "charts:render", "charts.internal", _I, "charts://jobs/"
)
BILLING_QUERY = Tool(
    "billing.query", "read", "billing:read", "billing.internal", _C, "billing://invoices/", 3
)
GITHUB_READ = Tool(
    "github.read_pr", "read", "repo:read", "github.com/acme", _I, "github://acme/api/pull/", 4
)
GITHUB_COMMENT = Tool(
    "github.comment", "write", "repo:comment", "github.com/acme", _I, "github://acme/api/pull/", 2
)
CI_RUN = Tool("ci.run_tests", "execute", "ci:run", "ci.internal", _I, "ci://pipelines/")
PAGER_ACK = Tool(
    "pagerduty.ack", "write", "incidents:write", "pagerduty.com", _I, "pagerduty://incidents/"
)
METRICS_QUERY = Tool(
    "metrics.query", "read", "metrics:read", "prometheus.internal", _IC, "prom://queries/", 4
)
K8S_RESTART = Tool(
    "k8s.rollout_restart",
    "execute",
    "k8s:restart",
    "k8s.prod.internal",
    _I,
    "k8s://prod/deployments/",
)
SLACK_POST = Tool("slack.post", "write", "chat:write", "slack.com", _I, "slack://channels/inc-", 2)
LOGS_SEARCH = Tool(
    "logs.search",
    "read",
    "logs:read",
    "loki.internal",
    ("confidential", "restricted"),
    "loki://streams/",
    3,
)
S3_PUT = Tool(
    "s3.put_object",
    "transfer",
    "exports:write",
    "s3://acme-exports",
    _PI,
    "s3://acme-exports/batch-",
)
EMAIL_SEND = Tool(
    "email.send", "write", "email:send", "smtp.acme.example", _I, "mailto://finance-team/"
)
S3_GET = Tool(
    "s3.get_object",
    "read",
    "datalake:read",
    "s3://acme-datalake",
    _IC,
    "s3://acme-datalake/raw/part-",
    4,
)
WAREHOUSE_LOAD = Tool(
    "warehouse.load",
    "write",
    "warehouse:write",
    "warehouse.internal",
    _IC,
    "warehouse://staging/",
    3,
)
ETL_STEP = Tool("etl.run_step", "execute", "etl:run", "airflow.internal", _I, "airflow://dags/")
TRUNCATE_STAGING = Tool(
    "warehouse.truncate_staging",
    "delete",
    "warehouse:write",
    "warehouse.internal",
    _I,
    "warehouse://staging/",
)

TASKS = (
    Task(
        "support_ticket_triage",
        "triage",
        "Triage an inbound support ticket and draft a reply",
        "planner",
        (TICKET_READ, TICKET_UPDATE),
        (
            Hop("researcher", (KB_SEARCH, CRM_SEARCH)),
            Hop("summarizer", (LLM_SUMMARIZE, TICKET_COMMENT)),
        ),
        "confidential",
        "medium",
        (4, 12),
        (300, 6000),
        30,
    ),
    Task(
        "quarterly_report",
        "report",
        "Compile the quarterly revenue report for finance",
        "planner",
        (SHEETS_READ, DOCS_WRITE),
        (
            Hop("researcher", (WAREHOUSE_QUERY, SHEETS_READ)),
            Hop("summarizer", (LLM_SUMMARIZE, DOCS_WRITE)),
            Hop("coder", (CHARTS_RENDER,)),
            Hop("billing-bot", (BILLING_QUERY,)),
        ),
        "confidential",
        "low",
        (4, 10),
        (300, 6000),
        15,
    ),
    Task(
        "code_review",
        "review",
        "Review an open pull request and run its tests",
        "coder",
        (GITHUB_READ, GITHUB_COMMENT, CI_RUN),
        (Hop("summarizer", (LLM_SUMMARIZE,)),),
        "internal",
        "medium",
        (4, 12),
        (300, 6000),
        20,
    ),
    Task(
        "incident_response",
        "incident",
        "Respond to a paging production incident",
        "sre-oncall",
        (PAGER_ACK, METRICS_QUERY, K8S_RESTART, SLACK_POST),
        (Hop("researcher", (LOGS_SEARCH, METRICS_QUERY)), Hop("summarizer", (LLM_SUMMARIZE,))),
        "restricted",
        "high",
        (5, 16),
        (200, 4000),
        10,
        unrestricted_destinations=0.5,
    ),
    Task(
        "data_export",
        "export",
        "Export the monthly billing extract for finance",
        "billing-bot",
        (BILLING_QUERY, S3_PUT, EMAIL_SEND),
        (),
        "confidential",
        "medium",
        (3, 10),
        (300, 6000),
        15,
    ),
    Task(
        "nightly_batch_etl",
        "etl",
        "Nightly batch load of the data lake into the warehouse",
        "etl-runner",
        (S3_GET, WAREHOUSE_LOAD, WAREHOUSE_QUERY, ETL_STEP),
        (),
        "confidential",
        "low",
        (150, 600),
        (800, 6000),
        3,
        cleanup=TRUNCATE_STAGING,
        batch=True,
    ),
)

TASKS_BY_NAME = {t.name: t for t in TASKS}

#: Benign delegation chains never exceed this many hops (the contract's default maximum).
MAX_BENIGN_HOPS = 3
