"""A labelled corpus of traces with planted secrets, personal data and look-alike controls.

Generated with faker and the providers' formats from a fixed seed, in the shapes tracegate
serves: OTLP/JSON spans with GenAI attributes (messages JSON-encoded inside strings),
Langfuse-style traces with observations, and JSONL chat logs with reasoning and tool calls.
Used by the accuracy tests and the masking benchmark (faker is a development dependency).
"""

from __future__ import annotations

import base64
import json
import random
import string
import uuid
from dataclasses import dataclass, field
from typing import Any

ALNUM = string.ascii_letters + string.digits
B64 = ALNUM + "+/"


@dataclass
class Planted:
    kind: str  # detector name, or "control:<what>"
    value: str

    @property
    def is_control(self) -> bool:
        return self.kind.startswith("control:")


@dataclass
class Corpus:
    documents: list[tuple[str, Any]] = field(default_factory=list)  # (shape, document)
    planted: list[Planted] = field(default_factory=list)


class CorpusBuilder:
    def __init__(self, seed: int = 20261127) -> None:
        from faker import Faker

        self.rng = random.Random(seed)
        self.fake = Faker(["en_US", "en_GB", "de_DE", "fr_FR"])
        self.fake.seed_instance(seed)
        self._pem = _pem_keys()

    def rand(self, alphabet: str, n: int) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    # -- sensitive values, by the providers' formats ---------------------------------------

    def secret(self, kind: str) -> tuple[str, str]:
        """(value that must disappear, text that carries it)."""
        r = self.rand
        if kind == "aws_access_key_id":
            v = self.rng.choice(["AKIA", "ASIA"]) + r(string.ascii_uppercase + string.digits, 16)
            return v, f"export AWS_ACCESS_KEY_ID={v}"
        if kind == "aws_secret_access_key":
            v = r(B64, 40)
            return v, f"aws_secret_access_key = {v}"
        if kind == "github_token":
            v = self.rng.choice(["ghp_", "gho_", "ghs_"]) + r(ALNUM, 36)
            return v, f"I used the token {v} to clone the repo"
        if kind == "gitlab_token":
            v = "glpat-" + r(ALNUM + "-_", 20)
            return v, f"CI failed with {v} in the logs"
        if kind == "slack_token":
            v = f"xoxb-{r(string.digits, 12)}-{r(string.digits, 13)}-{r(ALNUM, 24)}"
            return v, f"bot token {v}"
        if kind == "slack_webhook":
            v = f"https://hooks.slack.com/services/T{r(string.ascii_uppercase + string.digits, 10)}/B{r(string.ascii_uppercase + string.digits, 10)}/{r(ALNUM, 24)}"  # noqa: E501
            return v, f"post the alert to {v} please"
        if kind == "stripe_key":
            v = self.rng.choice(["sk_live_", "rk_live_", "sk_test_"]) + r(ALNUM, 32)
            return v, f"stripe key: {v}"
        if kind == "anthropic_api_key":
            v = "sk-ant-api03-" + r(ALNUM + "-_", 93) + "AA"
            return v, f"ANTHROPIC_API_KEY={v}"
        if kind == "openai_api_key":
            v = "sk-proj-" + r(ALNUM + "-_", 74) + "T3BlbkFJ" + r(ALNUM + "-_", 74)
            return v, f"the key {v} stopped working"
        if kind == "google_api_key":
            v = "AIza" + r(ALNUM + "-_", 35)
            return v, f"maps call with key={v}&q=paris"
        if kind == "jwt":
            header = _b64url(json.dumps({"alg": "RS256", "typ": "JWT"}))
            claims = _b64url(json.dumps({"sub": self.fake.user_name(), "exp": 1795794382}))
            v = f"{header}.{claims}.{r(ALNUM + '-_', 86)}"
            return v, f"Authorization header was Bearer {v}"
        if kind == "private_key":
            v = self.rng.choice(self._pem)
            return v.splitlines()[1], f"here is the key:\n{v}\nuse it carefully"
        if kind == "url_password":
            v = r(ALNUM, 14)
            scheme = self.rng.choice(["postgres", "mysql", "mongodb+srv", "redis", "amqp"])
            return (
                v,
                f"connect with {scheme}://svc_{r(string.ascii_lowercase, 5)}:{v}"
                "@db.internal:5432/app",
            )
        if kind == "secret_assignment":
            v = r(ALNUM + "!#%&", 14)
            key = self.rng.choice(["password", "passwd", "client_secret", "api_key", "token"])
            return v, f'config has {key}="{v}" in it'
        if kind == "high_entropy_secret":
            v = r(ALNUM, 40)
            return v, f"the credential for the staging cluster is {v} (rotate monthly)"
        raise ValueError(kind)

    def personal(self, kind: str) -> tuple[str, str]:
        f = self.fake
        if kind == "email":
            v = f.email()
            return v, f"please write to {v} about it"
        if kind == "phone":
            v = self.rng.choice(
                [
                    f"({self.rng.choice(US_AREAS)}) {self.rng.randint(200, 999)}-"
                    + self.rand(string.digits, 4),
                    "+44 20 7946 " + self.rand(string.digits, 4),
                    "+49 30 " + self.rand(string.digits, 8),
                    "+33 1 " + " ".join(self.rand(string.digits, 2) for _ in range(4)),
                    "+1 415-555-" + self.rand(string.digits, 4),
                ]
            )
            return v, f"call me back on {v} tomorrow"
        if kind == "card":
            v = f.credit_card_number(
                card_type=self.rng.choice(["visa", "mastercard", "amex", "discover"])
            )
            if self.rng.random() < 0.5 and len(v) == 16:
                v = " ".join(v[i : i + 4] for i in range(0, 16, 4))
            return v, f"charge card {v} for the renewal"
        if kind == "iban":
            v = f.iban()
            return v, f"refund to IBAN {v} please"
        if kind == "ssn":
            v = f["en_US"].ssn()
            return v, f"SSN on file: {v}"
        if kind == "ipv4":
            v = f.ipv4()
            return v, f"request came from {v} at night"
        if kind == "ipv6":
            v = f.ipv6()
            return v, f"client address {v} was blocked"
        raise ValueError(kind)

    def control(self, kind: str) -> str:
        r, f = self.rand, self.fake
        choices = {
            "uuid": lambda: str(uuid.UUID(int=self.rng.getrandbits(128))),
            "git_sha": lambda: r("0123456789abcdef", self.rng.choice([7, 40])),
            "timestamp": lambda: f.iso8601() if self.rng.random() < 0.5 else str(f.date_time()),
            "date": lambda: f.date(),
            "version": lambda: (
                self.rng.choice(["v", "", "Python ", "release "])
                + ".".join(str(self.rng.randint(0, 20)) for _ in range(self.rng.choice([2, 3])))
            ),
            "order_number": lambda: self.rng.choice(["ORD-", "INV-", "#"]) + r(string.digits, 8),
            "non_luhn_16": lambda: _non_luhn(self.rng),
            "placeholder": lambda: self.rng.choice(
                [
                    "user@example.com",
                    "you@example.org",
                    "password=<your-password>",
                    "api_key: YOUR_API_KEY",
                    "token=${TOKEN}",
                    "AKIAXXXXXXXXXXXXXXXX",
                ]
            ),
            "amount": lambda: f"{self.rng.randint(1, 99999):,}.{r(string.digits, 2)} USD",
            "count": lambda: f"max_tokens={self.rng.choice([256, 1024, 4096])}",
        }
        return choices[kind]()


US_AREAS = [212, 213, 305, 312, 404, 415, 503, 512, 617, 702, 718, 801, 818, 919]
# Secrets that only their surroundings identify: planted with their context, never bare.
CONTEXT_KINDS = {
    "aws_secret_access_key",
    "url_password",
    "secret_assignment",
    "high_entropy_secret",
}
SECRET_KINDS = [
    "aws_access_key_id",
    "aws_secret_access_key",
    "github_token",
    "gitlab_token",
    "slack_token",
    "slack_webhook",
    "stripe_key",
    "anthropic_api_key",
    "openai_api_key",
    "google_api_key",
    "jwt",
    "private_key",
    "url_password",
    "secret_assignment",
    "high_entropy_secret",
]
PERSONAL_KINDS = ["email", "phone", "card", "iban", "ssn", "ipv4", "ipv6"]
CONTROL_KINDS = [
    "uuid",
    "git_sha",
    "timestamp",
    "date",
    "version",
    "order_number",
    "non_luhn_16",
    "placeholder",
    "amount",
    "count",
]


def build_corpus(per_kind: int = 60, seed: int = 20261127) -> Corpus:
    """Documents in three shapes, each item planted once, in free text or as a whole value."""
    b = CorpusBuilder(seed)
    corpus = Corpus()
    items: list[tuple[Planted, str]] = []
    for kind in SECRET_KINDS:
        for _ in range(per_kind):
            value, text = b.secret(kind)
            items.append((Planted(kind, value), text))
    for kind in PERSONAL_KINDS:
        for _ in range(per_kind):
            value, text = b.personal(kind)
            items.append((Planted(kind, value), text))
    for kind in CONTROL_KINDS:
        for _ in range(per_kind):
            value = b.control(kind)
            items.append((Planted(f"control:{kind}", value), f"note: {value} was recorded"))
    b.rng.shuffle(items)
    shapes = [_otlp, _langfuse, _chat_line]
    for start in range(0, len(items), 6):
        chunk = items[start : start + 6]
        texts = []
        for planted, text in chunk:
            corpus.planted.append(planted)
            # Some values stand alone as a whole field value, the rest sit inside prose.
            whole = not planted.is_control and b.rng.random() < 0.2 and "\n" not in text
            if whole and planted.kind in CONTEXT_KINDS:
                texts.append(text)  # the whole value is the carrier, e.g. a DSN
            else:
                texts.append(planted.value if whole else f"{b.fake.sentence()} {text}.")
        shape = shapes[(start // 6) % len(shapes)]
        corpus.documents.append((shape.__name__.strip("_"), shape(b, texts)))
    return corpus


def _otlp(b: CorpusBuilder, texts: list[str]) -> dict[str, Any]:
    def attr(key: str, value: str) -> dict[str, Any]:
        return {"key": key, "value": {"stringValue": value}}

    messages = [
        {"role": "user", "parts": [{"type": "text", "content": texts[0]}]},
        {"role": "assistant", "parts": [{"type": "reasoning", "content": " ".join(texts[1:3])}]},
    ]
    tool_args = json.dumps({"query": texts[3] if len(texts) > 3 else "", "limit": 5})
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
                                "spanId": b.rand("0123456789abcdef", 16),
                                "name": "chat",
                                "attributes": [
                                    attr("gen_ai.input.messages", json.dumps(messages)),
                                    attr("gen_ai.tool.call.arguments", tool_args),
                                    attr("gen_ai.output.messages", " ".join(texts[4:])),
                                    {
                                        "key": "gen_ai.usage.input_tokens",
                                        "value": {"intValue": "812"},
                                    },
                                ],
                            }
                        ],
                    }
                ],
            }
        ]
    }


def _langfuse(b: CorpusBuilder, texts: list[str]) -> dict[str, Any]:
    return {
        "id": str(uuid.UUID(int=b.rng.getrandbits(128))),
        "name": "support-agent",
        "userId": f"u-{b.rng.randint(1000, 9999)}",
        "input": {"question": texts[0]},
        "output": texts[1] if len(texts) > 1 else "",
        "metadata": {"note": texts[2] if len(texts) > 2 else ""},
        "observations": [
            {
                "type": "GENERATION",
                "model": "example-model",
                "input": [{"role": "user", "content": t} for t in texts[3:5]],
                "output": {"role": "assistant", "content": " ".join(texts[5:])},
            }
        ],
    }


def _chat_line(b: CorpusBuilder, texts: list[str]) -> dict[str, Any]:
    return {
        "trace_id": f"chat-{b.rng.randint(0, 10**6):07d}",
        "prompt": texts[0],
        "reasoning": " ".join(texts[1:3]),
        "tool_calls": [
            {"name": "search", "arguments": json.dumps({"q": t}, ensure_ascii=False)}
            for t in texts[3:5]
        ],
        "answer": " ".join(texts[5:]),
    }


def _b64url(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def _non_luhn(rng: random.Random) -> str:
    from stdnum import luhn

    while True:
        digits = "".join(rng.choice(string.digits) for _ in range(16))
        if not luhn.is_valid(digits):
            return digits


def _pem_keys() -> list[str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    keys = []
    for _ in range(3):
        private = ec.generate_private_key(ec.SECP256R1())
        keys.append(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode()
        )
    return keys


def realistic_text_documents(target_bytes: int, seed: int = 7) -> list[Any]:
    """Trace-shaped documents of plain prose (a few planted values), for speed measurements."""
    b = CorpusBuilder(seed)
    paragraphs = [b.fake.paragraph(nb_sentences=6) for _ in range(400)]
    documents: list[Any] = []
    size = 0
    n = 0
    while size < target_bytes:
        texts = [b.rng.choice(paragraphs) for _ in range(6)]
        if n % 10 == 0:
            texts[0] += " " + b.personal("email")[1] + " " + b.secret("github_token")[1]
        shape = (_otlp, _langfuse, _chat_line)[n % 3]
        document = shape(b, texts)
        size += len(json.dumps(document))
        documents.append(document)
        n += 1
    return documents
