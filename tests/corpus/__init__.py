"""A labelled corpus of agent traces with planted secrets, personal data and look-alikes.

Test and benchmark data, not product code. Each planted value is placed one of five ways: in
prose, as a whole field value, under a key that names it (`customer_name`, `ssn`), inside a
JSON document encoded in a string, or two such encodings deep; the documents are OTLP GenAI
spans, Langfuse traces with observations, and JSONL chat lines. `build_corpus` is what the
accuracy test and `scripts/bench/accuracy.py` measure; `realistic_export` is the benchmark's
body (chat spans repeating their history, JSON tool results, digit-heavy strings).
"""

from __future__ import annotations

import json
import string
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.corpus.values import (
    CONTEXT_SECRETS,
    CONTROL_MAKERS,
    PERSONAL_MAKERS,
    SECRET_MAKERS,
    Values,
)

SECRET_KINDS = list(SECRET_MAKERS)
PERSONAL_KINDS = list(PERSONAL_MAKERS)
CONTROL_KINDS = list(CONTROL_MAKERS)


@dataclass
class Planted:
    kind: str  # a secret or personal kind, or "control:<what>"
    value: str
    document: int = -1  # index of the document holding it
    placement: str = ""

    @property
    def is_control(self) -> bool:
        return self.kind.startswith("control:")

    @property
    def category(self) -> str:
        if self.is_control:
            return "control"
        return "secret" if self.kind in SECRET_MAKERS else "pii"


@dataclass
class Corpus:
    documents: list[tuple[str, Any]] = field(default_factory=list)  # (shape, document)
    planted: list[Planted] = field(default_factory=list)


# Keys under which a value is stored whole, named for what it is.
KEYS = {
    "person_name": ["customer_name", "name", "full_name", "author", "contact", "assignee"],
    "street_address": ["address", "shipping_address", "billing_address", "home_address"],
    "email": ["email", "contact_email", "user_email"],
    "phone": ["phone", "mobile", "phone_number", "contact_phone", "tel"],
    "ssn": ["ssn", "tax_id", "social_security_number"],
    "card": ["card_number", "pan", "card"],
    "iban": ["iban", "bank_account"],
    "ipv4": ["client_ip", "ip", "remote_addr"],
    "ipv6": ["client_ip", "ip6", "remote_addr"],
}
CARRIERS = {
    "person_name": [
        "Dear {v}, thanks for reaching out.",
        "The ticket was opened by {v} yesterday.",
        "my name is {v} and I need help",
        "Customer {v} asked for a refund.",
        "Best regards,\n{v}",
        "{v} wrote: the export is broken",
        "escalate to {v} if it happens again",
        "Hi {v}, your order shipped.",
    ],
    "street_address": [
        "ship it to {v} please",
        "the customer lives at {v}.",
        "billing address: {v}",
        "Our office is at {v}, second floor.",
        "deliver to {v} before Friday",
    ],
    "email": ["please write to {v} about it", "contact: {v}", "sent from {v}."],
    "phone": [
        "call me back on {v} tomorrow",
        "phone: {v}",
        "her mobile is {v}.",
        "you can reach him at {v}",
        "Tel. {v}",
    ],
    "ssn": ["SSN on file: {v}", "my SSN is {v}", "social security number {v}.", "SSN: {v}"],
    "card": ["charge card {v} for the renewal", "card number: {v}", "paid with {v}."],
    "iban": ["refund to IBAN {v} please", "IBAN: {v}", "wire it to {v}."],
    "ipv4": ["request came from {v} at night", "geolocate {v}.", "blocked {v}"],
    "ipv6": ["client address {v} was blocked", "from {v}.", "peer {v}"],
}
PLACEMENTS = ["prose", "prose", "whole", "keyed", "json1", "json2"]


def needs_context(kind: str, value: str) -> bool:
    """Values that no one could tell apart from a number without the words around them."""
    if kind == "ssn":
        return value.isdigit()
    if kind == "phone":
        return value.isdigit() and not value.startswith("0")
    return False


class CorpusBuilder:
    def __init__(self, seed: int = 20261201) -> None:
        self.v = Values(seed)
        self.rng = self.v.rng

    def carrier(self, kind: str, value: str) -> str:
        if kind in CARRIERS:
            return self.rng.choice(CARRIERS[kind]).format(v=value)
        return value

    def sentence(self) -> str:
        return self.v.faker().sentence(nb_words=self.rng.randint(6, 14))

    def placed(self, planted: Planted, text: str) -> tuple[str, Any]:
        """(placement, fragment): a string of prose, or a (key, value) pair for a field."""
        kind = planted.kind
        placement = self.rng.choice(PLACEMENTS)
        if planted.is_control:
            placement = self.rng.choice(["prose", "whole", "json1"])
        if placement == "keyed" and kind not in KEYS:
            placement = "prose"
        if placement == "whole" and kind in CONTEXT_SECRETS:
            return "whole", text  # the carrier (a DSN, an assignment) is the whole value
        if placement == "whole":
            if kind in PERSONAL_MAKERS and needs_context(kind, planted.value):
                return "whole", text  # a bare 9-digit SSN is only an SSN with its words
            return "whole", planted.value if kind in PERSONAL_MAKERS or planted.is_control else text
        if placement == "keyed":
            return "keyed", (self.rng.choice(KEYS[kind]), planted.value)
        prose = f"{self.sentence()} {text} {self.sentence()}"
        if placement == "json1":
            return "json1", json.dumps({"result": prose, "ok": True}, ensure_ascii=False)
        if placement == "json2":
            inner = json.dumps({"content": prose}, ensure_ascii=False)
            return "json2", json.dumps({"tool": "lookup", "output": inner}, ensure_ascii=False)
        return "prose", prose


def build_corpus(per_kind: int = 60, seed: int = 20261201) -> Corpus:
    """Documents in three shapes; every item is planted once, in one of five placements."""
    b = CorpusBuilder(seed)
    corpus = Corpus()
    items: list[tuple[Planted, str]] = []
    for kind in SECRET_KINDS:
        for _ in range(per_kind):
            value, text = b.v.secret(kind)
            items.append((Planted(kind, value), text))
    for kind in PERSONAL_KINDS:
        for _ in range(per_kind):
            value = PERSONAL_MAKERS[kind](b.v)
            items.append((Planted(kind, value), b.carrier(kind, value)))
    for kind in CONTROL_KINDS:
        for _ in range(per_kind):
            value = CONTROL_MAKERS[kind](b.v)
            items.append((Planted(f"control:{kind}", value), f"note: {value} was recorded"))
    b.rng.shuffle(items)
    shapes = [_otlp, _langfuse, _chat_line]
    for start in range(0, len(items), 6):
        chunk = items[start : start + 6]
        texts: list[str] = []
        fields: dict[str, str] = {}
        for planted, text in chunk:
            planted.document = len(corpus.documents)
            placement, fragment = b.placed(planted, text)
            planted.placement = placement
            corpus.planted.append(planted)
            if placement == "keyed":
                key, value = fragment
                while key in fields:
                    key += "_2"
                fields[key] = value
            else:
                texts.append(fragment)
        while len(texts) < 6:
            texts.append(b.sentence())
        shape = shapes[(start // 6) % len(shapes)]
        corpus.documents.append((shape.__name__.strip("_"), shape(b, texts, fields)))
    return corpus


def _otlp(b: CorpusBuilder, texts: list[str], fields: dict[str, str]) -> dict[str, Any]:
    def attr(key: str, value: Any) -> dict[str, Any]:
        return {"key": key, "value": {"stringValue": value}}

    messages = [
        {"role": "user", "parts": [{"type": "text", "content": texts[0]}]},
        {"role": "assistant", "parts": [{"type": "reasoning", "content": " ".join(texts[1:3])}]},
    ]
    tool_args = json.dumps({"query": texts[3], "limit": 5, **fields}, ensure_ascii=False)
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [attr("service.name", "agent")]},
                "scopeSpans": [
                    {
                        "scope": {"name": "genai"},
                        "spans": [
                            {
                                "traceId": uuid.UUID(int=b.rng.getrandbits(128)).hex,
                                "spanId": b.v.r("0123456789abcdef", 16),
                                "name": "chat",
                                "attributes": [
                                    attr("gen_ai.input.messages", json.dumps(messages)),
                                    attr("gen_ai.tool.call.arguments", tool_args),
                                    attr("gen_ai.tool.call.result", texts[4]),
                                    attr("gen_ai.output.messages", " ".join(texts[5:])),
                                    {
                                        "key": "gen_ai.usage.input_tokens",
                                        "value": {"intValue": str(b.rng.randint(10, 9999))},
                                    },
                                ],
                            }
                        ],
                    }
                ],
            }
        ]
    }


def _langfuse(b: CorpusBuilder, texts: list[str], fields: dict[str, str]) -> dict[str, Any]:
    return {
        "id": str(uuid.UUID(int=b.rng.getrandbits(128))),
        "name": "support-agent",
        "userId": f"u-{b.rng.randint(1000, 9999)}",
        "input": {"question": texts[0], **fields},
        "output": texts[1],
        "metadata": {"note": texts[2]},
        "observations": [
            {
                "type": "GENERATION",
                "model": "example-model",
                "input": [{"role": "user", "content": t} for t in texts[3:5]],
                "output": {"role": "assistant", "content": " ".join(texts[5:])},
            }
        ],
    }


def _chat_line(b: CorpusBuilder, texts: list[str], fields: dict[str, str]) -> dict[str, Any]:
    return {
        "trace_id": f"chat-{b.rng.randint(0, 10**6):07d}",
        "prompt": texts[0],
        "reasoning": " ".join(texts[1:3]),
        "tool_calls": [
            {"name": "crm.lookup", "arguments": json.dumps(fields, ensure_ascii=False)},
            *(
                {"name": "search", "arguments": json.dumps({"q": t}, ensure_ascii=False)}
                for t in texts[3:5]
            ),
        ],
        "answer": " ".join(texts[5:]),
    }


# -- the benchmark body -------------------------------------------------------------------


def realistic_export(target_bytes: int, seed: int = 7, planted_every: int = 25) -> list[Any]:
    """Spans of agent sessions as an observability export holds them: each chat span repeats
    the conversation so far, tool results are JSON inside strings, and strings are digit-heavy
    (timestamps, durations, token counts, money, order and ticket numbers, UUIDs, trace ids).
    One turn in `planted_every` carries a planted secret or personal value."""
    b = CorpusBuilder(seed)
    v = b.v
    controls = list(CONTROL_MAKERS)
    documents: list[Any] = []
    size = 0
    turn = 0
    while size < target_bytes:
        session = str(uuid.UUID(int=b.rng.getrandbits(128)))
        trace_id = v.r("0123456789abcdef", 32)
        history: list[dict[str, Any]] = [
            {"role": "system", "content": "You are a support agent for Acme. Be concise."}
        ]
        for _ in range(b.rng.randint(4, 10)):
            facts = [CONTROL_MAKERS[b.rng.choice(controls)](v) for _ in range(4)]
            question = f"{b.sentence()} Order {facts[0]}, placed {facts[1]}; {b.sentence()}"
            if turn % planted_every == 0:
                kind = b.rng.choice(PERSONAL_KINDS)
                question += " " + b.carrier(kind, PERSONAL_MAKERS[kind](v))
            if turn % (planted_every * 2) == 1:
                question += " " + v.secret(b.rng.choice(SECRET_KINDS))[1]
            turn += 1
            history.append({"role": "user", "content": question})
            result = {
                "order_id": f"ORD-{v.r(string.digits, 8)}",
                "status": b.rng.choice(["shipped", "pending", "refunded"]),
                "updated_at": CONTROL_MAKERS["timestamp"](v),
                "amount": CONTROL_MAKERS["amount"](v),
                "items": [
                    {"sku": f"SKU-{v.r(string.digits, 8)}", "qty": b.rng.randint(1, 5)}
                    for _ in range(b.rng.randint(1, 4))
                ],
                "notes": f"{facts[2]} {b.sentence()} {facts[3]}",
            }
            history.append(
                {
                    "role": "tool",
                    "tool_call_id": f"call_{v.r(string.ascii_letters + string.digits, 24)}",
                    "content": json.dumps(result),
                }
            )
            answer = f"{b.sentence()} {b.sentence()} Ticket {CONTROL_MAKERS['ticket_number'](v)}."
            history.append({"role": "assistant", "content": answer})
            span = {
                "traceId": trace_id,
                "spanId": v.r("0123456789abcdef", 16),
                "parentSpanId": v.r("0123456789abcdef", 16),
                "name": f"chat {CONTROL_MAKERS['model_id'](v)}",
                "startTimeUnixNano": str(b.rng.randint(17 * 10**17, 18 * 10**17)),
                "endTimeUnixNano": str(b.rng.randint(17 * 10**17, 18 * 10**17)),
                "attributes": [
                    {"key": "session.id", "value": {"stringValue": session}},
                    {
                        "key": "gen_ai.input.messages",
                        "value": {"stringValue": json.dumps(history[:-1])},
                    },
                    {
                        "key": "gen_ai.output.messages",
                        "value": {"stringValue": json.dumps([history[-1]])},
                    },
                    {
                        "key": "gen_ai.usage.input_tokens",
                        "value": {"intValue": str(b.rng.randint(100, 200_000))},
                    },
                    {"key": "duration_ms", "value": {"doubleValue": b.rng.uniform(10, 9000)}},
                ],
            }
            size += len(json.dumps(span))
            documents.append(span)
            if size >= target_bytes:
                break
    return documents
