"""Sensitive values and harmless look-alikes, each in many formats, from two generators.

Faker (14 locales) and mimesis (12 locales) make people, addresses and phone numbers; secrets
follow the providers' published token formats with random bodies. Nothing here is read by a
detector: this is how test data is made, so the detectors must find these values by shape and
context, never by looking them up.
"""

from __future__ import annotations

import base64
import json
import random
import string
import uuid
from collections.abc import Callable

import phonenumbers
from faker import Faker
from mimesis import Address, Person
from mimesis.locales import Locale
from stdnum import luhn

ALNUM = string.ascii_letters + string.digits
LOWER_ALNUM = string.ascii_lowercase + string.digits
UPPER_ALNUM = string.ascii_uppercase + string.digits
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"
URLSAFE = ALNUM + "-_"

FAKER_LOCALES = [
    "en_US", "en_GB", "en_IE", "en_AU", "en_IN", "de_DE", "fr_FR", "it_IT", "es_ES", "nl_NL",
    "pl_PL", "hu_HU", "pt_BR", "sv_SE",
]  # fmt: skip
MIMESIS_LOCALES = [
    Locale.EN, Locale.DE, Locale.FR, Locale.IT, Locale.ES, Locale.NL, Locale.PL, Locale.HU,
    Locale.PT_BR, Locale.SV, Locale.CS, Locale.DA,
]  # fmt: skip
# Regions whose national phone formats the corpus writes (each checked valid by phonenumbers).
PHONE_REGIONS = [
    "US", "CA", "GB", "IE", "DE", "FR", "IT", "ES", "PT", "NL", "BE", "CH", "AT", "PL", "SE",
    "JP", "AU", "IN", "BR", "MX",
]  # fmt: skip


class Values:
    """Draws values of each kind from a seeded random source."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.fakers = {loc: Faker(loc) for loc in FAKER_LOCALES}
        for i, fake in enumerate(self.fakers.values()):
            fake.seed_instance(seed + i)
        self.people = [Person(loc, seed=seed + i) for i, loc in enumerate(MIMESIS_LOCALES)]
        self.places = [Address(loc, seed=seed + i) for i, loc in enumerate(MIMESIS_LOCALES)]
        self.en = self.fakers["en_US"]

    def r(self, alphabet: str, n: int) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def pick(self, options):
        return self.rng.choice(options)

    def faker(self) -> Faker:
        return self.fakers[self.pick(FAKER_LOCALES)]

    # -- secrets: (value, carrier text) -------------------------------------------------------

    def secret(self, kind: str) -> tuple[str, str]:
        return SECRET_MAKERS[kind](self)

    # -- personal data --------------------------------------------------------------------------

    def person_name(self) -> str:
        if self.rng.random() < 0.6:
            fake = self.faker()
            name = (
                fake.name()
                if self.rng.random() < 0.6
                else f"{fake.first_name()} {fake.last_name()}"
            )
        else:
            name = self.pick(self.people).full_name()
        return name

    def street_address(self) -> str:
        if self.rng.random() < 0.65:
            loc = self.pick([x for x in FAKER_LOCALES if x != "en_IN"])
            address = self.fakers[loc].address()
        else:
            place = self.pick(self.places)
            address = f"{place.address()}, {place.postal_code()} {place.city()}"
        return address if self.rng.random() < 0.5 else address.replace("\n", ", ")

    def phone(self) -> str:
        region = self.pick(PHONE_REGIONS)
        for _ in range(200):
            example = phonenumbers.example_number_for_type(
                region,
                self.pick(
                    [phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE]
                ),
            )
            if example is None:
                continue
            national = str(example.national_number)
            keep = self.rng.randint(2, 4)
            candidate = national[:keep] + self.r(string.digits, len(national) - keep)
            number = phonenumbers.parse(candidate, region)
            if phonenumbers.is_valid_number(number):
                break
        else:  # pragma: no cover - every region has examples
            raise RuntimeError(region)
        style = self.rng.random()
        if style < 0.4:
            text = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
        elif style < 0.7:
            text = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
        elif style < 0.8:
            text = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        else:
            national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
            digits = "".join(c for c in national if c.isdigit())
            text = self.pick([digits, national.replace(" ", "-"), national.replace(" ", ".")])
            if not phonenumbers.is_valid_number(phonenumbers.parse(text, region)):
                text = national
        return text

    def card(self) -> str:
        fake = self.faker()
        kind = self.pick(["visa", "mastercard", "amex", "discover", "diners", "jcb", "visa16"])
        number = fake.credit_card_number(card_type=kind)
        digits = number
        if len(digits) == 15 and digits[:2] in ("34", "37"):
            groups = [4, 6, 5]
        elif len(digits) == 14:
            groups = [4, 6, 4]
        elif len(digits) == 16:
            groups = [4, 4, 4, 4]
        else:
            groups = [len(digits)]
        sep = self.pick(["", " ", "-", " "])
        out, i = [], 0
        for g in groups:
            out.append(digits[i : i + g])
            i += g
        if i < len(digits):
            out.append(digits[i:])
        return sep.join(out)

    def iban(self) -> str:
        from stdnum import iban

        value = self.faker().iban()
        while not iban.is_valid(value):  # some locales' generators make invalid ones
            value = self.faker().iban()
        if self.rng.random() < 0.5:
            value = " ".join(value[i : i + 4] for i in range(0, len(value), 4))
        return value

    def ssn(self) -> str:
        from stdnum.us import ssn

        while True:
            raw = self.en.ssn().replace("-", "")
            if ssn.is_valid(raw):
                break
        sep = self.pick(["-", "-", " ", ""])
        return sep.join([raw[:3], raw[3:5], raw[5:]]) if sep else raw

    def ipv4(self) -> str:
        return self.en.ipv4_public() if self.rng.random() < 0.7 else self.en.ipv4_private()

    def ipv6(self) -> str:
        value = self.en.ipv6()
        if self.rng.random() < 0.3:  # compressed form
            import ipaddress

            value = str(ipaddress.IPv6Address(value))
        return value

    def email(self) -> str:
        if self.rng.random() < 0.6:
            return self.faker().email()
        return self.pick(self.people).email()

    # -- look-alikes ------------------------------------------------------------------------

    def control(self, kind: str) -> str:
        return CONTROL_MAKERS[kind](self)


# -- secret makers, by provider format ----------------------------------------------------------


def _env(v: Values, name: str, value: str) -> str:
    return v.pick([f"export {name}={value}", f"{name}={value}", f'{name}: "{value}"'])


def _prose(v: Values, value: str, what: str) -> str:
    return v.pick(
        [
            f"I used the {what} {value} to call the API",
            f"the {what} is {value}",
            f"set {what} to {value} and retry",
            f"({what}: {value})",
        ]
    )


def _simple(prefix: str, alphabet: str, n: int, what: str) -> Callable[[Values], tuple[str, str]]:
    def make(v: Values) -> tuple[str, str]:
        value = prefix + v.r(alphabet, n)
        return value, _prose(v, value, what)

    return make


def _aws_key_id(v: Values):
    value = v.pick(["AKIA", "ASIA"]) + v.r(UPPER_ALNUM.replace("0", "").replace("1", ""), 16)
    return value, _env(v, "AWS_ACCESS_KEY_ID", value)


def _aws_secret(v: Values):
    value = v.r(B64, 40)
    return value, v.pick(
        [
            f"aws_secret_access_key = {value}",
            f"AWS_SECRET_ACCESS_KEY={value}",
            f'"SecretAccessKey": "{value}"',
        ]
    )


def _jwt(v: Values):
    def b64url(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    value = (
        f"{b64url({'alg': v.pick(['RS256', 'ES256', 'HS256']), 'typ': 'JWT'})}."
        f"{b64url({'sub': v.en.user_name(), 'exp': v.rng.randint(1_700_000_000, 1_900_000_000)})}."
        f"{v.r(URLSAFE, 86)}"
    )
    return value, f"Authorization: Bearer {value}"


def _private_key(v: Values):
    body = "\n".join(v.r(B64, 64) for _ in range(6))
    kind = v.pick(["RSA ", "EC ", "", "OPENSSH "])
    value = f"-----BEGIN {kind}PRIVATE KEY-----\n{body}\n-----END {kind}PRIVATE KEY-----"
    return body.splitlines()[2], f"here is the key:\n{value}\nuse it carefully"


def _password(v: Values) -> str:
    return (
        v.r(string.ascii_letters, 4)
        + v.pick(["!", "@", "#", "$", "%", "^", "&", "*", "=", "+", ".", "_", "-"])
        + v.r(ALNUM, 5)
        + v.pick(["!", "#", "$", "%", "*", "+", ".", "_"])
        + v.r(string.digits, 2)
    )


def _url_password(v: Values):
    value = _password(v).replace("@", "!")
    scheme = v.pick(["postgres", "postgresql", "mysql", "mongodb+srv", "redis", "amqp", "https"])
    user = v.en.user_name()
    host = v.pick(["db.internal", "10.0.3.7", "cache.prod.local", "mq.acme.io"])
    return value, f"connect with {scheme}://{user}:{value}@{host}:5432/app"


def _basic_auth(v: Values):
    value = _password(v).replace("@", "#")
    user = v.en.user_name()
    return value, v.pick(
        [
            f"curl -u {user}:{value} https://api.acme.io/v1/items",
            f"curl --user '{user}:{value}' https://ci.acme.io/job",
            f"log in as {user}:{value} on the admin page",
        ]
    )


def _env_password(v: Values):
    value = _password(v)
    name = v.pick(["DB_PASSWORD", "POSTGRES_PASSWORD", "SMTP_PASS", "ADMIN_PWD", "REDIS_PASSWORD"])
    return value, v.pick(
        [f"export {name}={value}", f"{name}={value} ./run.sh", f"--password={value}"]
    )


def _prose_password(v: Values):
    value = _password(v)
    return value, v.pick(
        [
            f"the DB password is {value}",
            f"log in with password {value} and change it",
            f"my password is {value} if you need it",
            f"use the passphrase {value} for the vault",
        ]
    )


def _secret_assignment(v: Values):
    value = v.r(ALNUM + "!#%&", 16)
    key = v.pick(["password", "passwd", "client_secret", "api_key", "token", "apiKey"])
    return value, v.pick([f'config has {key}="{value}" in it', f"{key}: {value}", f"{key}={value}"])


def _high_entropy(v: Values):
    value = v.r(ALNUM, 40)
    return value, f"the credential for the staging cluster is {value} (rotate monthly)"


def _slack_webhook(v: Values):
    value = (
        f"https://hooks.slack.com/services/T{v.r(UPPER_ALNUM, 10)}/B{v.r(UPPER_ALNUM, 10)}/"
        f"{v.r(ALNUM, 24)}"
    )
    return value, f"post the alert to {value} please"


def _discord_webhook(v: Values):
    value = f"https://discord.com/api/webhooks/{v.r(string.digits, 18)}/{v.r(URLSAFE, 68)}"
    return value, f"notify {value}"


def _slack_token(v: Values):
    value = f"xox{v.pick('bpa')}-{v.r(string.digits, 12)}-{v.r(string.digits, 13)}-{v.r(ALNUM, 24)}"
    return value, _prose(v, value, "slack token")


def _telegram(v: Values):
    value = f"{v.r(string.digits, 10)}:AA{v.r(URLSAFE, 33)}"
    return value, f"bot token {value}"


def _sendgrid(v: Values):
    value = f"SG.{v.r(URLSAFE, 22)}.{v.r(URLSAFE, 43)}"
    return value, _env(v, "SENDGRID_API_KEY", value)


def _azure_storage(v: Values):
    value = v.r(B64, 86) + "=="
    return value, (
        f"DefaultEndpointsProtocol=https;AccountName=acme{v.r(LOWER_ALNUM, 5)};"
        f"AccountKey={value};EndpointSuffix=core.windows.net"
    )


def _mailchimp(v: Values):
    value = f"{v.r(HEX, 32)}-us{v.rng.randint(1, 21)}"
    return value, _prose(v, value, "mailchimp key")


def _databricks(v: Values):
    value = "dapi" + v.r(HEX, 32)
    return value, _env(v, "DATABRICKS_TOKEN", value)


def _anthropic(v: Values):
    value = "sk-ant-api03-" + v.r(URLSAFE, 93) + "AA"
    return value, _env(v, "ANTHROPIC_API_KEY", value)


def _openai(v: Values):
    if v.rng.random() < 0.5:
        value = "sk-proj-" + v.r(URLSAFE, 74) + "T3BlbkFJ" + v.r(URLSAFE, 74)
    else:
        value = "sk-" + v.r(ALNUM, 20) + "T3BlbkFJ" + v.r(ALNUM, 20)
    return value, _prose(v, value, "key")


def _gitlab(v: Values):
    value = v.pick(["glpat-", "gldt-", "glrt-"]) + v.r(URLSAFE, 20)
    return value, f"CI failed with {value} in the logs"


def _stripe(v: Values):
    value = v.pick(["sk_live_", "rk_live_", "sk_test_"]) + v.r(ALNUM, v.pick([24, 32, 99]))
    return value, f"stripe key: {value}"


def _shopify(v: Values):
    value = v.pick(["shpat_", "shpss_", "shpca_", "shppa_"]) + v.r(HEX, 32)
    return value, _prose(v, value, "shopify token")


SECRET_MAKERS: dict[str, Callable[[Values], tuple[str, str]]] = {
    "aws_access_key_id": _aws_key_id,
    "aws_secret_access_key": _aws_secret,
    "github_token": _simple("ghp_", ALNUM, 36, "token"),
    "github_oauth": _simple("gho_", ALNUM, 36, "token"),
    "github_pat": _simple("github_pat_", ALNUM + "_", 82, "token"),
    "gitlab_token": _gitlab,
    "slack_token": _slack_token,
    "slack_webhook": _slack_webhook,
    "stripe_key": _stripe,
    "anthropic_api_key": _anthropic,
    "openai_api_key": _openai,
    "google_api_key": _simple("AIza", URLSAFE, 35, "maps key"),
    "google_oauth_secret": _simple("GOCSPX-", URLSAFE, 28, "client secret"),
    "huggingface_token": _simple("hf_", string.ascii_letters, 34, "HF token"),
    "groq_api_key": _simple("gsk_", ALNUM, 52, "groq key"),
    "replicate_token": _simple("r8_", ALNUM, 37, "replicate token"),
    "perplexity_key": _simple("pplx-", ALNUM, 48, "key"),
    "xai_key": _simple("xai-", ALNUM, 80, "key"),
    "langfuse_secret_key": _simple("sk-lf-", HEX, 32, "langfuse key"),
    "npm_token": _simple("npm_", ALNUM, 36, "npm token"),
    "pypi_token": _simple("pypi-AgEIcHlwaS5vcmc", URLSAFE, 70, "upload token"),
    "docker_pat": _simple("dckr_pat_", URLSAFE, 27, "docker token"),
    "sendgrid_api_key": _sendgrid,
    "twilio_api_key": _simple("SK", HEX, 32, "twilio key"),
    "shopify_token": _shopify,
    "digitalocean_token": _simple("dop_v1_", HEX, 64, "DO token"),
    "databricks_token": _databricks,
    "vault_token": _simple("hvs.", URLSAFE, 90, "vault token"),
    "linear_api_key": _simple("lin_api_", ALNUM, 40, "linear key"),
    "newrelic_key": _simple("NRAK-", UPPER_ALNUM, 27, "new relic key"),
    "sentry_token": _simple("sntrys_", ALNUM, 80, "sentry token"),
    "grafana_token": _simple("glsa_", ALNUM, 32, "grafana token"),
    "doppler_token": _simple("dp.pt.", ALNUM, 43, "doppler token"),
    "pulumi_token": _simple("pul-", HEX, 40, "pulumi token"),
    "age_secret_key": _simple(
        "AGE-SECRET-KEY-1", "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", 58, "age key"
    ),
    "mailchimp_key": _mailchimp,
    "telegram_bot_token": _telegram,
    "discord_webhook": _discord_webhook,
    "azure_storage_key": _azure_storage,
    "jwt": _jwt,
    "private_key": _private_key,
    "url_password": _url_password,
    "basic_auth": _basic_auth,
    "env_password": _env_password,
    "prose_password": _prose_password,
    "secret_assignment": _secret_assignment,
    "high_entropy_secret": _high_entropy,
}
# Secrets that only their surroundings identify: planted with their context, never bare.
CONTEXT_SECRETS = {
    "aws_secret_access_key", "url_password", "basic_auth", "env_password", "prose_password",
    "secret_assignment", "high_entropy_secret", "azure_storage_key", "private_key",
}  # fmt: skip


# -- look-alikes ---------------------------------------------------------------------------


def _timestamp(v: Values) -> str:
    dt = v.en.date_time_between("-3y", "+1y")
    return v.pick(
        [
            dt.isoformat(),
            dt.isoformat() + "Z",
            dt.strftime("%Y-%m-%d %H:%M:%S"),
            dt.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            dt.strftime("%d/%m/%Y %H:%M"),
            dt.strftime("%m/%d/%Y %I:%M %p"),
            dt.strftime("%a, %d %b %Y %H:%M:%S GMT"),
            str(int(dt.timestamp())),
            str(int(dt.timestamp() * 1000)),
            dt.strftime("%Y%m%d%H%M%S"),
        ]
    )


def _date(v: Values) -> str:
    d = v.en.date_object()
    return v.pick(
        [
            d.isoformat(),
            d.strftime("%d.%m.%Y"),
            d.strftime("%d/%m/%Y"),
            d.strftime("%m/%d/%Y"),
            d.strftime("%Y%m%d"),
            d.strftime("%d %b %Y"),
            d.strftime("%B %d, %Y"),
        ]
    )


def _order(v: Values) -> str:
    return v.pick(
        [
            f"ORD-{v.rng.randint(2019, 2026)}-{v.r(string.digits, 6)}",
            f"INV-{v.r(string.digits, 8)}",
            f"#{v.r(string.digits, v.pick([6, 8, 10]))}",
            f"PO{v.r(string.digits, 9)}",
            f"order {v.r(string.digits, 10)}",
            f"SO-{v.r(string.digits, 4)}-{v.r(string.digits, 4)}-{v.r(string.digits, 4)}",
            f"{v.r(string.ascii_uppercase, 3)}{v.r(string.digits, 10)}",
        ]
    )


def _ticket(v: Values) -> str:
    return v.pick(
        [
            f"TKT-{v.r(string.digits, 6)}",
            f"JIRA-{v.r(string.digits, 5)}",
            f"INC{v.r(string.digits, 7)}",
            f"CASE-{v.r(string.digits, 8)}",
            f"ticket #{v.r(string.digits, 7)}",
            f"SR {v.r(string.digits, 3)}-{v.r(string.digits, 3)}-{v.r(string.digits, 4)}",
        ]
    )


def _non_luhn(v: Values) -> str:
    while True:
        digits = v.r(string.digits, 16)
        if not luhn.is_valid(digits):
            return digits


def _version(v: Values) -> str:
    count = v.pick([2, 3, 4])
    parts = ".".join(str(v.rng.randint(0, 30)) for _ in range(count))
    # A bare dotted quad is an IPv4 address by any reading: four parts come with their word.
    prefixes = ["v", "Python ", "release ", "node ", "version "] + ([""] if count < 4 else [])
    return v.pick(prefixes) + parts


def _model_id(v: Values) -> str:
    return v.pick(
        [
            f"claude-3-5-sonnet-{v.en.date('%Y%m%d')}",
            f"gpt-4o-{v.en.date('%Y-%m-%d')}",
            f"gpt-4o-mini-{v.en.date('%Y-%m-%d')}",
            f"gemini-1.5-pro-{v.r(string.digits, 3)}",
            f"mistral-large-{v.en.date('%y%m')}",
            f"anthropic.claude-3-haiku-{v.en.date('%Y%m%d')}-v1:0",
        ]
    )


def _amount(v: Values) -> str:
    n = v.rng.randint(1, 999_999)
    cents = v.r(string.digits, 2)
    return v.pick(
        [
            f"{n:,}.{cents} USD",
            f"${n:,}.{cents}",
            f"€{n}.{cents}",
            f"{n:,}".replace(",", ".") + f",{cents} €",
            f"{n:,}".replace(",", " ") + f",{cents} EUR",
            f"£{n}",
        ]
    )


def _duration(v: Values) -> str:
    return v.pick(
        [
            f"{v.rng.randint(1, 99_999)} ms",
            f"{v.rng.uniform(0.01, 999):.3f}s",
            f"latency_ms={v.rng.randint(1, 99_999)}",
            f"took {v.rng.randint(1, 59)}m{v.rng.randint(0, 59)}s",
            f"{v.rng.randint(0, 23):02d}:{v.rng.randint(0, 59):02d}:{v.rng.randint(0, 59):02d}"
            f".{v.r(string.digits, 3)}",
        ]
    )


def _counts(v: Values) -> str:
    return v.pick(
        [
            f"max_tokens={v.pick([256, 1024, 4096, 8192])}",
            f"prompt_tokens: {v.rng.randint(10, 200_000)}, "
            f"completion_tokens: {v.rng.randint(1, 9999)}",
            f"input_tokens={v.rng.randint(10, 9_999_999)}",
            f"{v.rng.randint(1, 9_999_999):,} rows scanned",
            f"HTTP {v.pick([200, 201, 404, 429, 500, 503])} after {v.rng.randint(1, 9)} retries",
            f"size {v.rng.randint(1, 9_999_999_999)} bytes",
        ]
    )


def _hex_id(v: Values) -> str:
    return v.pick([v.r(HEX, 32), v.r(HEX, 16), "0x" + v.r(HEX, 40), v.r(HEX.upper(), 24)])


def _placeholder(v: Values) -> str:
    return v.pick(
        [
            "user@example.com",
            "you@example.org",
            "password=<your-password>",
            "api_key: YOUR_API_KEY",
            "token=${TOKEN}",
            "AKIAXXXXXXXXXXXXXXXX",
            "AKIAIOSFODNN7EXAMPLE",
            "sk-...",
            "postgres://user:password@localhost/db",
            "Bearer <token>",
            "xxx-xx-xxxx",
            "0000 0000 0000 0000",
        ]
    )


def _coordinates(v: Values) -> str:
    return f"{v.rng.uniform(-89, 89):.6f}, {v.rng.uniform(-179, 179):.6f}"


def _phone_like_id(v: Values) -> str:
    return v.pick(
        [
            f"ORD-{v.r(string.digits, 4)}-{v.r(string.digits, 6)}",
            f"request_id=req_{v.r(string.digits, 10)}",
            f"build {v.r(string.digits, 3)}-{v.r(string.digits, 3)}-{v.r(string.digits, 4)}",
            f"SKU-{v.r(string.digits, 10)}",
            f"acct-{v.r(string.digits, 9)}",
        ]
    )


CONTROL_MAKERS: dict[str, Callable[[Values], str]] = {
    "uuid": lambda v: str(uuid.UUID(int=v.rng.getrandbits(128))),
    "git_sha": lambda v: v.r(HEX, v.pick([7, 12, 40])),
    "hex_id": _hex_id,
    "timestamp": _timestamp,
    "date": _date,
    "version": _version,
    "order_number": _order,
    "ticket_number": _ticket,
    "id_with_digits": _phone_like_id,
    "non_luhn_16": _non_luhn,
    "placeholder": _placeholder,
    "amount": _amount,
    "duration": _duration,
    "count": _counts,
    "model_id": _model_id,
    "coordinates": _coordinates,
}
PERSONAL_MAKERS: dict[str, Callable[[Values], str]] = {
    "email": Values.email,
    "phone": Values.phone,
    "card": Values.card,
    "iban": Values.iban,
    "ssn": Values.ssn,
    "ipv4": Values.ipv4,
    "ipv6": Values.ipv6,
    "person_name": Values.person_name,
    "street_address": Values.street_address,
}
