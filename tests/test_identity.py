"""Token validation against a real issuer serving its JWKS over HTTP."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import httpx
import pytest
from jose import jwt

from tracegate.config import IdentityConfig
from tracegate.demo.issuer import SigningKey, TokenIssuer
from tracegate.denial import Denial
from tracegate.identity.oidc import TokenValidator, bearer_token


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def own_issuer():
    """A private issuer per test, so rotation and outages do not leak into other tests."""
    issuer = TokenIssuer()
    issuer.serve()
    yield issuer
    issuer.stop()


def validator_for(issuer: TokenIssuer, clock=time.monotonic, **provider) -> TokenValidator:
    config = IdentityConfig(
        providers=[
            {
                "name": "test",
                "issuer": issuer.issuer,
                "audience": "tracegate",
                "jwks_uri": issuer.jwks_uri,
                **provider,
            }
        ]
    )
    return TokenValidator(config, clock=clock, fetch_timeout=0.5)


def refused(validator: TokenValidator, token: str) -> str:
    with pytest.raises(Denial) as caught:
        asyncio.run(validator.validate(token))
    assert caught.value.status == 401
    return caught.value.reason


def unsigned(header: dict, claims: dict, signature: bytes = b"") -> str:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return ".".join(
        [part(json.dumps(header).encode()), part(json.dumps(claims).encode()), part(signature)]
    )


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_valid_tokens_become_principals(own_issuer, alg):
    token = own_issuer.token("alice", ["support-engineers"], alg=alg)
    principal = asyncio.run(validator_for(own_issuer).validate(token))
    assert principal.subject == "alice"
    assert principal.groups == ("support-engineers",)
    assert principal.issuer == own_issuer.issuer


def test_expired_token_is_refused(own_issuer):
    assert refused(validator_for(own_issuer), own_issuer.token("a", ttl=-120)) == "token expired"


def test_expiry_within_leeway_is_accepted(own_issuer):
    token = own_issuer.token("a", ttl=-5)
    assert asyncio.run(validator_for(own_issuer).validate(token)).subject == "a"


def test_wrong_audience_is_refused(own_issuer):
    reason = refused(validator_for(own_issuer), own_issuer.token("a", aud="someone-else"))
    assert reason == "wrong audience: token is not for 'tracegate'"


def test_token_not_yet_valid_is_refused(own_issuer):
    token = own_issuer.token("a", nbf=int(time.time()) + 3600)
    assert "not yet valid" in refused(validator_for(own_issuer), token)


def test_unknown_issuer_is_refused(own_issuer):
    token = own_issuer.token("a", iss="http://127.0.0.1:1/elsewhere")
    assert "unknown token issuer" in refused(validator_for(own_issuer), token)


def test_alg_none_is_refused(own_issuer):
    token = unsigned(
        {"alg": "none", "typ": "JWT"},
        {"iss": own_issuer.issuer, "aud": "tracegate", "sub": "a", "exp": time.time() + 60},
    )
    assert "algorithm 'none' is not allowed" in refused(validator_for(own_issuer), token)


def test_hmac_signed_with_the_public_key_is_refused(own_issuer):
    # The classic algorithm-confusion attack: HS256 keyed with the RSA public key.
    public_pem = own_issuer.key("RS256").public_jwk
    claims = {"iss": own_issuer.issuer, "aud": "tracegate", "sub": "a", "exp": time.time() + 60}
    forged = jwt.encode(claims, json.dumps(public_pem), algorithm="HS256", headers={"kid": "x"})
    assert "algorithm 'HS256' is not allowed" in refused(validator_for(own_issuer), forged)


def test_algorithm_outside_the_providers_allow_list_is_refused(own_issuer):
    token = own_issuer.token("a", alg="ES256")
    reason = refused(validator_for(own_issuer, algorithms=["RS256"]), token)
    assert "algorithm 'ES256' is not allowed" in reason


def test_tampered_token_is_refused(own_issuer):
    header, payload, signature = own_issuer.token("alice", ["support-engineers"]).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["groups"] = ["admins"]
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    reason = refused(validator_for(own_issuer), f"{header}.{forged_payload}.{signature}")
    assert "signature verification failed" in reason


def test_token_signed_by_a_key_the_issuer_never_published_is_refused(own_issuer):
    stranger = SigningKey.generate("RS256", kid="stranger")
    token = own_issuer.token("a", key=stranger)
    assert "unknown signing key (kid 'stranger')" in refused(validator_for(own_issuer), token)


def test_malformed_token_is_refused(own_issuer):
    assert "malformed token" in refused(validator_for(own_issuer), "not-a-jwt")


def test_unknown_kid_refetches_at_most_once_a_minute_and_picks_up_rotation(own_issuer):
    clock = Clock()
    validator = validator_for(own_issuer, clock=clock)

    async def scenario() -> None:
        await validator.validate(own_issuer.token("a"))
        assert own_issuer.jwks_requests == 1
        rotated = own_issuer.rotate()
        new_token = own_issuer.token("a", key=rotated)
        clock.now += 30  # within the minute: no refetch, the new key is unknown for now
        with pytest.raises(Denial, match="unknown signing key"):
            await validator.validate(new_token)
        stranger = own_issuer.token("a", key=SigningKey.generate("RS256", kid="ghost"))
        for _ in range(5):
            with pytest.raises(Denial):
                await validator.validate(stranger)
        assert own_issuer.jwks_requests == 1
        clock.now += 31  # a minute later: one refetch finds the rotated key
        assert (await validator.validate(new_token)).subject == "a"
        assert own_issuer.jwks_requests == 2

    asyncio.run(scenario())


def test_known_keys_keep_working_while_the_jwks_endpoint_is_down(own_issuer):
    clock = Clock()
    validator = validator_for(own_issuer, clock=clock, jwks_refresh_seconds=10)

    async def scenario() -> None:
        await validator.validate(own_issuer.token("a"))
        own_issuer.fail_jwks = True
        clock.now += 3600  # keys are stale; refresh fails in the background
        assert (await validator.validate(own_issuer.token("a"))).subject == "a"
        unknown = own_issuer.token("a", key=SigningKey.generate("RS256", kid="new"))
        started = time.monotonic()
        with pytest.raises(Denial, match="unknown signing key"):
            await validator.validate(unknown)
        assert time.monotonic() - started < 2

    asyncio.run(scenario())


def test_a_slow_jwks_fetch_does_not_hold_flows_with_known_keys(own_issuer):
    validator = validator_for(own_issuer)

    async def scenario() -> None:
        await validator.validate(own_issuer.token("a"))
        own_issuer.jwks_delay = 0.4
        validator.caches[own_issuer.issuer]._last_attempt = -1e9  # allow a refetch now
        unknown = own_issuer.token("a", key=SigningKey.generate("RS256", kid="slow"))
        slow = asyncio.create_task(validator.validate(unknown))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        assert (await validator.validate(own_issuer.token("b"))).subject == "b"
        assert time.monotonic() - started < 0.2
        with pytest.raises(Denial):
            await slow

    asyncio.run(scenario())


def test_jwks_from_a_local_file(own_issuer, tmp_path):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(own_issuer.jwks()))
    config = IdentityConfig(
        providers=[
            {
                "name": "f",
                "issuer": own_issuer.issuer,
                "audience": "tracegate",
                "jwks_file": str(path),
            }
        ]
    )
    principal = asyncio.run(TokenValidator(config).validate(own_issuer.token("filed")))
    assert principal.subject == "filed"


@pytest.mark.parametrize(
    ("headers", "token"),
    [
        ({"Authorization": "Bearer abc"}, "abc"),
        ({"X-Tracegate-Token": "xyz", "Authorization": "AWS4-HMAC-SHA256 Credential=..."}, "xyz"),
        ({"x-tracegate-token": "Bearer xyz"}, "xyz"),
    ],
)
def test_token_comes_from_the_configured_header_or_bearer(headers, token):
    assert bearer_token(headers, "X-Tracegate-Token") == token


def test_aws_sdk_clients_without_a_token_are_told_which_header_to_use():
    with pytest.raises(Denial, match="AWS SDK clients must send the token in X-Tracegate-Token"):
        bearer_token({"Authorization": "AWS4-HMAC-SHA256 Credential=x"}, "X-Tracegate-Token")


# -- through the running gateway ---------------------------------------------------------


@pytest.mark.parametrize(
    ("make_token", "reason"),
    [
        (lambda i: i.token("a", ["support-engineers"], ttl=-300), "token expired"),
        (lambda i: i.token("a", ["support-engineers"], aud="other"), "wrong audience"),
        (
            lambda i: unsigned(
                {"alg": "none"}, {"iss": i.issuer, "aud": "tracegate", "sub": "a", "exp": 2e9}
            ),
            "algorithm 'none' is not allowed",
        ),
        (
            lambda i: i.token("a", key=SigningKey.generate("RS256", kid="nope")),
            "unknown signing key",
        ),
        (lambda i: i.token("a", ["support-engineers"])[:-6] + "AAAAAA", "signature"),
        (lambda i: None, "no identity token"),
    ],
    ids=["expired", "wrong-audience", "alg-none", "unknown-kid", "tampered", "missing"],
)
def test_gateway_refuses_bad_tokens_with_401_and_forwards_nothing(
    shared_gateway, issuer, make_token, reason
):
    token = make_token(issuer)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(shared_gateway.url + "/traces/traces/team-a/tr-a001.json", headers=headers)
    assert response.status_code == 401
    assert reason in response.json()["error"]["reason"]
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "messages" not in response.text


def test_gateway_refuses_a_valid_token_without_a_role(shared_gateway, issuer):
    token = issuer.token("mallory", ["interns"])
    response = httpx.get(
        shared_gateway.url + "/traces/traces/team-a/tr-a001.json",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 403
    assert "has no tracegate role" in response.json()["error"]["reason"]


def test_store_refuses_requests_that_do_not_come_through_the_gateway(store):
    direct = httpx.get(f"{store.endpoint}/traces/traces/team-a/tr-a001.json")
    assert direct.status_code == 403
    from botocore.exceptions import ClientError

    from tracegate.demo.store import Keys

    forged = store.client(Keys(store.gateway_keys.access_key_id, "not-the-secret" * 3))
    with pytest.raises(ClientError) as caught:
        forged.get_object(Bucket="traces", Key="traces/team-a/tr-a001.json")
    assert caught.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_discovery_finds_the_jwks_through_the_openid_configuration(own_issuer):
    config = IdentityConfig(
        providers=[
            {"name": "d", "issuer": own_issuer.issuer, "audience": "tracegate", "discovery": True}
        ]
    )
    principal = asyncio.run(TokenValidator(config).validate(own_issuer.token("disco")))
    assert principal.subject == "disco"


def test_discovery_refuses_a_document_naming_another_issuer(own_issuer):
    config = IdentityConfig(
        providers=[
            {
                "name": "d",
                "issuer": own_issuer.issuer + "/",  # not what the document says
                "audience": "tracegate",
                "discovery": True,
            }
        ]
    )
    validator = TokenValidator(config, fetch_timeout=0.5)
    cache = validator.caches[own_issuer.issuer + "/"]
    asyncio.run(cache.refresh())
    assert not cache.loaded and "names issuer" in (cache.last_error or "")


def test_a_failed_jwks_fetch_is_retried_with_backoff_in_the_background(own_issuer):
    from tracegate.identity import oidc

    own_issuer.fail_jwks = True
    validator = validator_for(own_issuer)
    cache = validator.caches[own_issuer.issuer]

    async def scenario() -> None:
        original = oidc.RETRY_FIRST_SECONDS
        cache._retry_delay = 0.2  # short delays for the test; the schedule doubles each time
        await validator.warm_up()
        assert not cache.loaded
        await asyncio.sleep(0.5)  # retries at ~0.2 s and ~0.6 s
        assert own_issuer.jwks_requests >= 2 and cache._retry_delay > 0.4
        own_issuer.fail_jwks = False
        deadline = time.monotonic() + 5
        while not cache.loaded and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert cache.loaded  # no flow had to ask for it
        assert cache._retry_delay == original

    asyncio.run(scenario())


def test_several_issuers_each_with_their_own_audience_claims_and_algorithms():
    first, second = TokenIssuer(audience="tracegate"), TokenIssuer(audience="traces-eu")
    first.serve()
    second.serve()
    try:
        config = IdentityConfig(
            providers=[
                {
                    "name": "corp",
                    "issuer": first.issuer,
                    "audience": "tracegate",
                    "jwks_uri": first.jwks_uri,
                    "algorithms": ["RS256"],
                },
                {
                    "name": "partner",
                    "issuer": second.issuer,
                    "audience": "traces-eu",
                    "jwks_uri": second.jwks_uri,
                    "algorithms": ["ES256"],
                    "roles_claim": "teams",
                    "subject_claim": "email",
                },
            ]
        )
        validator = TokenValidator(config)
        corp = asyncio.run(validator.validate(first.token("alice", ["support-engineers"])))
        assert (corp.provider, corp.groups) == ("corp", ("support-engineers",))
        partner_token = second.token("p-1", alg="ES256", teams=["analysts"], email="p@x.io")
        partner = asyncio.run(validator.validate(partner_token))
        assert (partner.provider, partner.subject, partner.groups) == (
            "partner",
            "p@x.io",
            ("analysts",),
        )
        with pytest.raises(Denial, match="algorithm 'RS256' is not allowed"):
            asyncio.run(validator.validate(second.token("p-2", alg="RS256")))
        with pytest.raises(Denial, match="wrong audience"):
            asyncio.run(validator.validate(first.token("a", aud="traces-eu")))
    finally:
        first.stop()
        second.stop()


def test_a_key_removed_from_the_jwks_stops_working_after_the_refresh_interval(own_issuer):
    clock = Clock()
    validator = validator_for(own_issuer, clock=clock, jwks_refresh_seconds=30)
    old_key = own_issuer.key("RS256")

    async def scenario() -> None:
        await validator.validate(own_issuer.token("a", key=old_key))
        own_issuer.keys.remove(old_key)  # the issuer withdraws the key
        clock.now += 10
        assert (await validator.validate(own_issuer.token("b", key=old_key))).subject == "b"
        clock.now += 25  # past the refresh interval: the stale set triggers a refresh
        await validator.validate(own_issuer.token("c", key=old_key))
        await asyncio.sleep(0.3)  # the background refresh completes
        with pytest.raises(Denial, match="unknown signing key"):
            await validator.validate(own_issuer.token("d", key=old_key))

    asyncio.run(scenario())


def signed(issuer: TokenIssuer, drop: tuple[str, ...] = (), header: dict | None = None, **claims):
    """A token correctly signed by the issuer's key, with claims removed or replaced."""
    now = int(time.time())
    body = {"iss": issuer.issuer, "aud": "tracegate", "sub": "mallory", "iat": now}
    body |= {"nbf": now, "exp": now + 3600, "groups": ["support-engineers"]}
    body.update(claims)
    for name in drop:
        body.pop(name)
    key = issuer.key("RS256")
    return jwt.encode(body, key.private_pem, algorithm="RS256", headers=header or {"kid": key.kid})


@pytest.mark.parametrize(
    ("make_token", "reason"),
    [
        (lambda i: signed(i, drop=("aud",)), "token has no aud claim"),
        (lambda i: signed(i, drop=("exp",)), "token has no exp claim"),
        (lambda i: signed(i, exp=str(int(time.time()) + 3600)), "claim 'exp' is not a number"),
        (lambda i: signed(i, exp=True), "claim 'exp' is not a number"),
        (lambda i: signed(i, nbf="0"), "claim 'nbf' is not a number"),
        (lambda i: signed(i, aud=["tracegate", 7]), "claim 'aud' is not a string"),
        (lambda i: signed(i, header={"kid": ["a", "b"]}), "header 'kid' is not a string"),
        (lambda i: signed(i, header={"kid": {"k": 1}}), "header 'kid' is not a string"),
    ],
    ids=[
        "no-aud",
        "no-exp",
        "string-exp",
        "bool-exp",
        "string-nbf",
        "mixed-aud",
        "list-kid",
        "map-kid",
    ],
)
def test_gateway_refuses_correctly_signed_tokens_of_the_wrong_shape_with_401(
    shared_gateway, issuer, make_token, reason
):
    response = httpx.get(
        shared_gateway.url + "/traces/traces/team-a/tr-a001.json",
        headers={"Authorization": f"Bearer {make_token(issuer)}"},
    )
    assert response.status_code == 401, response.text
    assert reason in response.json()["error"]["reason"]
    assert "messages" not in response.text
