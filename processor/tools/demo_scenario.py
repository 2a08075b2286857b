"""The demo's scenario: who uses the shared Open WebUI, and the gateway calls they make."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

OPENWEBUI_V4 = "172.18.0.5"  # the shared Open WebUI container, as AgentGateway sees it
OPENWEBUI_V6 = "fd00::7"  # a second Open WebUI replica on an IPv6 network
CI_RUNNER = "10.42.0.9"  # a CI job calling the gateway with its own JWT


@dataclass(frozen=True, slots=True)
class GatewayCall:
    """One LLM call as AgentGateway would trace it, and how its user becomes known."""

    minute: int  # minutes after the demo's start
    source: str  # the src.addr AgentGateway records
    provider: str
    model: str
    tokens_in: int
    tokens_out: int
    status: int = 200
    # "event:<user>": Open WebUI's filter reports a request event just before the call;
    # "trace:<user>": Open WebUI exports its own span in the same trace, after the call;
    # "jwt": the caller authenticated with a JWT the directory knows; "": nothing.
    identity: str = ""


@dataclass(frozen=True, slots=True)
class DemoUser:
    """An Open WebUI user of the demo."""

    id: str
    name: str

    @property
    def email(self) -> str:
        """The user's address."""
        return f"{self.id}@example.com"

    def as_json(self) -> dict[str, str]:
        """The session API's ``user`` object."""
        return {"id": self.id, "email": self.email, "name": self.name}


USERS = {
    u.id: u
    for u in (
        DemoUser("mike.chen", "Mike Chen"),
        DemoUser("ana.lima", "Ana Lima"),
        DemoUser("raj.patel", "Raj Patel"),
        DemoUser("sam.okafor", "Sam Okafor"),
    )
}

CALLS: tuple[GatewayCall, ...] = (
    GatewayCall(
        2,
        f"{OPENWEBUI_V4}:40312",
        "anthropic",
        "claude-sonnet-4-5",
        41,
        281,
        identity="event:mike.chen",
    ),
    GatewayCall(5, f"[{OPENWEBUI_V6}]:51022", "openai", "gpt-4o", 812, 96),  # raj's login
    GatewayCall(
        9,
        f"{OPENWEBUI_V4}:40312",
        "anthropic",
        "claude-sonnet-4-5",
        1204,
        530,
        identity="event:mike.chen",
    ),
    GatewayCall(
        14, f"{OPENWEBUI_V4}:40318", "openai", "gpt-4o-mini", 96, 12, identity="trace:ana.lima"
    ),
    GatewayCall(18, f"[{OPENWEBUI_V6}]:51022", "gcp.gemini", "gemini-2.5-pro", 2210, 704),
    GatewayCall(
        27, f"{OPENWEBUI_V4}:40330", "openai", "gpt-4o", 380, 190, identity="trace:ana.lima"
    ),
    GatewayCall(
        33, f"{CI_RUNNER}:52100", "anthropic", "claude-haiku-4-5", 150, 44, 429, identity="jwt"
    ),
    GatewayCall(
        39,
        f"[::ffff:{OPENWEBUI_V4}]:40344",
        "openai",
        "gpt-4o",
        55,
        300,
        identity="event:mike.chen",
    ),
    # mike and sam both sent a gpt-4o request within the same second: never guessed.
    GatewayCall(
        47,
        f"{OPENWEBUI_V4}:40330",
        "openai",
        "gpt-4o",
        610,
        233,
        identity="event:mike.chen,sam.okafor",
    ),
    GatewayCall(
        52,
        f"{OPENWEBUI_V4}:40344",
        "anthropic",
        "claude-sonnet-4-5",
        77,
        640,
        identity="event:sam.okafor",
    ),
    GatewayCall(55, "10.99.0.14:33001", "openai", "gpt-4o-mini", 30, 8),  # nobody's address
    GatewayCall(58, f"[{OPENWEBUI_V6}]:51040", "aws.bedrock", "claude-sonnet-4-5", 990, 410),
)

CI_JWT_SUB = "auth0|ci-pipeline"
DIRECTORY_YAML = f"""\
users:
  - id: ci-bot
    email: ci-bot@example.com
    name: CI pipeline
    team: platform
    principals:
      jwt.sub: ["{CI_JWT_SUB}"]
"""


def gateway_attributes(call: GatewayCall) -> dict[str, Any]:
    """The span attributes AgentGateway v1.x writes for an LLM call (see DOMAIN.md)."""
    attributes: dict[str, Any] = {
        "gateway": "default/agentgateway",
        "listener": "http",
        "route": "default/llm",
        "endpoint": f"api.{call.provider}.com:443",
        "protocol": "llm",
        "src.addr": call.source,
        "http.method": "POST",
        "http.host": "agentgateway:3000",
        "http.path": f"/{call.provider}/v1/chat/completions",
        "http.status": call.status,
        "http.version": "HTTP/1.1",
        "url.scheme": "http",
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": call.provider,
        "gen_ai.request.model": call.model,
        "gen_ai.response.model": call.model,
        "gen_ai.usage.input_tokens": call.tokens_in,
        "gen_ai.usage.output_tokens": call.tokens_out,
    }
    if call.identity == "jwt":
        attributes["jwt.sub"] = CI_JWT_SUB
    return attributes
