"""Sample reasoning traces for the demo and the tests: plain JSON, JSONL chat logs, OTLP/JSON.

The values planted here (emails, an API key, a card number) are fake, made up for the demo.
"""

from __future__ import annotations

import json
from typing import Any

PLANTED_EMAIL = "dana.reyes@example.com"
PLANTED_API_KEY = "sk-demo-4f9a8c7e6d5b4a3f2e1d0c9b8a7f6e5d"
PLANTED_CARD = "4111111111111111"


def agent_trace(trace_id: str, team: str, user_email: str = PLANTED_EMAIL) -> dict[str, Any]:
    return {
        "trace_id": trace_id,
        "team": team,
        "created_at": "2026-11-20T09:14:03Z",
        "model": "example-model-large",
        "latency_ms": 4812,
        "usage": {"input_tokens": 1834, "output_tokens": 412},
        "user": {"id": "u-1842", "email": user_email, "name": "Dana Reyes"},
        "metadata": {"environment": "prod", "api_key": PLANTED_API_KEY},
        "messages": [
            {"role": "system", "content": "You are a billing support agent."},
            {
                "role": "user",
                "content": f"My card {PLANTED_CARD} was charged twice, email me at {user_email}",
            },
            {
                "role": "assistant",
                "reasoning": "The user reports a double charge; look up their last invoices.",
                "tool_calls": [
                    {"name": "lookup_invoices", "arguments": {"email": user_email, "limit": 2}}
                ],
            },
            {
                "role": "tool",
                "name": "lookup_invoices",
                "content": json.dumps([{"invoice": "INV-20931", "amount": 49.0}]),
            },
            {"role": "assistant", "content": "I found the duplicate charge and refunded it."},
        ],
    }


def otlp_trace(trace_id: str) -> dict[str, Any]:
    def attr(key: str, value: str) -> dict[str, Any]:
        return {"key": key, "value": {"stringValue": value}}

    messages = [{"role": "user", "parts": [{"type": "text", "content": "Summarise my invoices"}]}]
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [attr("service.name", "billing-agent")]},
                "scopeSpans": [
                    {
                        "scope": {"name": "example.genai"},
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": "a1b2c3d4e5f60718",
                                "name": "chat example-model-large",
                                "attributes": [
                                    attr("gen_ai.operation.name", "chat"),
                                    attr("gen_ai.request.model", "example-model-large"),
                                    attr("user.email", PLANTED_EMAIL),
                                    attr("gen_ai.input.messages", json.dumps(messages)),
                                    {
                                        "key": "gen_ai.usage.input_tokens",
                                        "value": {"intValue": "96"},
                                    },
                                ],
                            }
                        ],
                    }
                ],
            }
        ]
    }


def chat_log_lines(count: int = 3) -> list[dict[str, Any]]:
    return [
        {
            "trace_id": f"chat-{i:04d}",
            "user": {"id": f"u-{100 + i}", "email": f"user{i}@example.com"},
            "prompt": f"Question {i} about my account",
            "reasoning": f"Step-by-step reasoning for question {i}",
            "answer": f"Answer {i}",
        }
        for i in range(count)
    ]


def sample_objects() -> dict[str, tuple[bytes, str]]:
    """Key -> (body, content type), for seeding a bucket."""
    objects: dict[str, tuple[bytes, str]] = {}
    for team in ("team-a", "team-b"):
        for n in range(1, 4):
            trace_id = f"tr-{team[-1]}{n:03d}"
            body = json.dumps(agent_trace(trace_id, team), indent=2).encode()
            objects[f"traces/{team}/{trace_id}.json"] = (body, "application/json")
        lines = "\n".join(json.dumps(line) for line in chat_log_lines()) + "\n"
        objects[f"traces/{team}/chats/2026-11-20.jsonl"] = (lines.encode(), "application/x-ndjson")
    objects["traces/team-a/otel/span-0001.json"] = (
        json.dumps(otlp_trace("4bf92f3577b34da6a3ce929d0e0e4736")).encode(),
        "application/json",
    )
    objects["traces/team-a/raw/screenshot.png"] = (b"\x89PNG\r\n\x1a\nnot-a-trace", "image/png")
    return objects


DYNAMO_SECRET = "AKIAQ3EGRTYUIOPL7KWM"


def dynamodb_items(per_tenant: int = 25) -> list[dict[str, Any]]:
    """Typed DynamoDB items for two tenants: every attribute type, nested maps and lists, and
    personal data and a secret inside the text."""
    items = []
    for tenant in ("acme", "globex"):
        for n in range(per_tenant):
            email = f"user{n}@{tenant}.example.org"
            items.append(
                {
                    "tenant_id": {"S": tenant},
                    "trace_id": {"S": f"tr-{n:04d}"},
                    "created_at": {"S": f"2026-11-{1 + n % 28:02d}T10:00:00Z"},
                    "model": {"S": "claude-sonnet-4"},
                    "latency_ms": {"N": str(800 + n)},
                    "cost_usd": {"N": "0.0125"},
                    "flagged": {"BOOL": n % 2 == 0},
                    "note": {"NULL": True},
                    "tags": {"SS": ["support", tenant]},
                    "scores": {"NS": ["0.5", "1"]},
                    "blob": {"B": b"raw bytes"},  # boto3 base64-encodes it
                    "user": {"M": {"id": {"S": f"u-{n}"}, "email": {"S": email}}},
                    "messages": {
                        "L": [
                            {"M": {"role": {"S": "user"}, "content": {"S": f"Mail me at {email}"}}},
                            {
                                "M": {
                                    "role": {"S": "tool"},
                                    "content": {"S": f"found key {DYNAMO_SECRET} in config"},
                                }
                            },
                        ]
                    },
                }
            )
    return items


def couch_documents() -> list[dict[str, Any]]:
    """CouchDB documents: one per agent trace, `_id` `TENANT:TRACE`, and a `tenant` field."""
    docs = []
    for tenant in ("acme", "globex"):
        for n in range(1, 13):
            trace_id = f"tr-{tenant}-{n:03d}"
            email = f"user{n}@{tenant}.example.org"
            docs.append(
                {
                    "_id": f"{tenant}:{trace_id}",
                    "tenant": tenant,
                    **agent_trace(trace_id, "support", email),
                }
            )
    return docs


def langfuse_project() -> list[dict[str, Any]]:
    """Langfuse traces (with their observations in full) for two tenants of one project: the
    shapes of Langfuse's public API, with personal data and a key in inputs and outputs."""
    traces = []
    for tenant in ("acme", "globex"):
        for n in range(1, 8):
            trace_id = f"lf-{tenant}-{n:03d}"
            email = f"customer{n}@{tenant}.example.org"
            question = f"Please refund order {n}; reach me at {email}"
            observations = [
                {
                    "id": f"{trace_id}-gen",
                    "traceId": trace_id,
                    "type": "GENERATION",
                    "name": "answer",
                    "startTime": "2026-11-20T09:14:03.000Z",
                    "endTime": "2026-11-20T09:14:05.100Z",
                    "model": "example-model-large",
                    "input": [
                        {"role": "system", "content": "You are a refunds agent."},
                        {"role": "user", "content": question},
                    ],
                    "output": {"role": "assistant", "content": "Refund issued."},
                    "metadata": {"tenant": tenant},
                    "usage": {"input": 812, "output": 64, "unit": "TOKENS"},
                    "level": "DEFAULT",
                    "parentObservationId": None,
                },
                {
                    "id": f"{trace_id}-tool",
                    "traceId": trace_id,
                    "type": "SPAN",
                    "name": "refund_api",
                    "startTime": "2026-11-20T09:14:04.000Z",
                    "endTime": "2026-11-20T09:14:04.400Z",
                    "input": {"order": n, "api_key": PLANTED_API_KEY},
                    "output": {"status": "refunded", "notify": email},
                    "metadata": {"tenant": tenant},
                    "level": "DEFAULT",
                    "parentObservationId": f"{trace_id}-gen",
                },
            ]
            traces.append(
                {
                    "id": trace_id,
                    "projectId": "demo-project",
                    "timestamp": "2026-11-20T09:14:03.000Z",
                    "name": "refund-request",
                    "userId": f"{tenant}-user-{n}",
                    "sessionId": f"{tenant}-session-{n % 3}",
                    "input": {"question": question},
                    "output": {"answer": "Refund issued."},
                    "metadata": {"tenant": tenant, "environment": "production"},
                    "tags": ["refunds", tenant],
                    "public": False,
                    "latency": 2.1,
                    "totalCost": 0.0132,
                    "htmlPath": f"/project/demo-project/traces/{trace_id}",
                    "observations": observations,
                    "scores": [{"id": f"{trace_id}-score", "name": "helpful", "value": 1}],
                }
            )
    return traces
