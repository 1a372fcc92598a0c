"""Every span and resource attribute name tether reads, in one place.

The GenAI and MCP semantic conventions are still *Development* status (semantic-conventions-genai)
and OpenInference is a separate convention, so names may move; change them here only. The
``tether.*`` names carry what no convention does (the credential, the grant, the workload
identity); the SDK's ``TetherSpanProcessor`` or a gateway sets them, and docs/otel.md lists them.
"""

from __future__ import annotations

from typing import Final

# --- OpenTelemetry GenAI (gen_ai.*) -----------------------------------------------------------
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_AGENT_ID: Final = "gen_ai.agent.id"
GEN_AI_AGENT_NAME: Final = "gen_ai.agent.name"
GEN_AI_CONVERSATION_ID: Final = "gen_ai.conversation.id"
GEN_AI_TOOL_NAME: Final = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID: Final = "gen_ai.tool.call.id"
GEN_AI_TOOL_TYPE: Final = "gen_ai.tool.type"
GEN_AI_WORKFLOW_NAME: Final = "gen_ai.workflow.name"

OP_EXECUTE_TOOL: Final = "execute_tool"
OP_INVOKE_AGENT: Final = "invoke_agent"
OP_INVOKE_WORKFLOW: Final = "invoke_workflow"

# --- MCP (mcp.*) ---------------------------------------------------------------------------------
MCP_METHOD_NAME: Final = "mcp.method.name"
MCP_SESSION_ID: Final = "mcp.session.id"
MCP_RESOURCE_URI: Final = "mcp.resource.uri"
MCP_TOOLS_CALL: Final = "tools/call"

# --- General ---------------------------------------------------------------------------------------
SERVER_ADDRESS: Final = "server.address"
ERROR_TYPE: Final = "error.type"
SERVICE_NAME: Final = "service.name"  # resource

# --- OpenInference ---------------------------------------------------------------------------------
OPENINFERENCE_SPAN_KIND: Final = "openinference.span.kind"
OPENINFERENCE_TOOL: Final = "TOOL"
OPENINFERENCE_AGENT: Final = "AGENT"
OPENINFERENCE_TOOL_NAME: Final = "tool.name"

# --- tether.* (what no convention carries) ---------------------------------------------------------
WORKFLOW_ID: Final = "tether.workflow.id"
WORKFLOW_OUTCOME: Final = "tether.workflow.outcome"  # on a root span: its end completes it
AGENT_ID: Final = "tether.agent.id"  # the workload id (e.g. a SPIFFE id)

CREDENTIAL_ID: Final = "tether.credential.id"  # the token's jti
CREDENTIAL_ISSUER: Final = "tether.credential.issuer"
CREDENTIAL_SUBJECT: Final = "tether.credential.subject"
CREDENTIAL_SCOPES: Final = "tether.credential.scopes"  # string array
CREDENTIAL_ISSUED_AT: Final = "tether.credential.issued_at"  # POSIX seconds or RFC 3339
CREDENTIAL_EXPIRES_AT: Final = "tether.credential.expires_at"

GRANT_TASK_TYPE: Final = "tether.grant.task_type"
GRANT_PURPOSE: Final = "tether.grant.purpose"
GRANT_SCOPES: Final = "tether.grant.scopes"
GRANT_TOOLS: Final = "tether.grant.tools"
GRANT_MAX_SENSITIVITY: Final = "tether.grant.max_sensitivity"
GRANT_DESTINATIONS: Final = "tether.grant.destinations"
GRANT_NOT_AFTER: Final = "tether.grant.not_after"
GRANT_AUTONOMY: Final = "tether.grant.autonomy"

DELEGATION_ID: Final = "tether.delegation.id"
DELEGATION_SCOPES: Final = "tether.delegation.scopes"
DELEGATION_EXPIRES_AT: Final = "tether.delegation.expires_at"

ACTION_OPERATION: Final = "tether.action.operation"
ACTION_RESOURCE: Final = "tether.action.resource"
ACTION_DESTINATION: Final = "tether.action.destination"
ACTION_DATA_SENSITIVITY: Final = "tether.action.data_sensitivity"

CREDENTIAL_ATTRIBUTES: Final = (
    CREDENTIAL_ID,
    CREDENTIAL_ISSUER,
    CREDENTIAL_SUBJECT,
    CREDENTIAL_SCOPES,
    CREDENTIAL_ISSUED_AT,
    CREDENTIAL_EXPIRES_AT,
)
"""Read together from one place (the span, its agent span, or the resource): never mixed."""
