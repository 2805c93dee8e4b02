"""SAML assertions through a real gateway: accepted when sound, refused (and audited) otherwise."""

from __future__ import annotations

import base64
import copy
import time

import httpx
import pytest
from lxml import etree

from tests.harness import audit_rows
from tests.samlidp import RECIPIENT, SAML, SAMLP, SP, TestIdP

A_TRACE = "/traces/traces/team-a/tr-a001.json"


@pytest.fixture(scope="module")
def idp():
    return TestIdP()


def provider_config(idp, tmp_path) -> dict:
    """The test IdP as a configured SAML provider, its metadata in a file."""
    metadata = tmp_path / "idp-metadata.xml"
    metadata.write_bytes(idp.metadata())
    return {
        "name": "test-idp",
        "entity_id": idp.entity_id,
        "audience": SP,
        "recipients": [RECIPIENT],
        "metadata_file": str(metadata),
    }


@pytest.fixture
def saml_gateway(make_gateway, idp, tmp_path):
    return make_gateway(how="run", **{"identity.saml": [provider_config(idp, tmp_path)]})


def with_saml(gateway, encoded: str, path: str = A_TRACE) -> httpx.Response:
    return httpx.get(gateway.url + path, headers={"X-Tracegate-SAML": encoded}, timeout=30)


def audited_reason(gateway, response) -> str:
    flow_id = response.headers.get("x-tracegate-flow") or response.json()["error"]["flow_id"]
    database = gateway.config.with_name("audit-0.sqlite3")
    deadline = time.monotonic() + 5
    while not (rows := audit_rows(database, flow_id=flow_id)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rows, f"no audit row for {flow_id}"
    return rows[0]["reason"]


def test_a_signed_assertion_maps_to_a_role_and_reads_masked_traces(saml_gateway, idp):
    response = with_saml(saml_gateway, idp.signed())
    assert response.status_code == 200, response.text
    assert response.json()["metadata"]["api_key"] == "[REDACTED:api-key]"
    database = saml_gateway.config.with_name("audit-0.sqlite3")
    row = audit_rows(database, flow_id=response.headers["x-tracegate-flow"])[0]
    assert (row["subject"], row["issuer"], row["role"]) == (
        "alice@corp.example",
        idp.entity_id,
        "support",
    )


def test_the_exchange_endpoint_trades_an_assertion_for_a_reusable_token(saml_gateway, idp):
    exchanged = httpx.post(saml_gateway.admin_url + "/saml/exchange", content=idp.signed())
    assert exchanged.status_code == 200, exchanged.text
    body = exchanged.json()
    assert body["token_type"] == "Bearer" and body["expires_at"] <= time.time() + 300 + 5
    headers = {"Authorization": f"Bearer {body['token']}"}
    for _ in range(3):  # the token, unlike the assertion, can be used again
        assert httpx.get(saml_gateway.url + A_TRACE, headers=headers).status_code == 200
    form = httpx.post(
        saml_gateway.admin_url + "/saml/exchange", data={"SAMLResponse": idp.signed()}
    )
    assert form.status_code == 200
    # Its key lives in memory: nothing to fetch, so no fetch fails (and none is retried).
    assert "JWKS fetch for provider saml-exchange" not in saml_gateway.log()


def tampered(idp) -> str:
    signed = idp.sign(idp.assertion())
    signed.find(f"{{{SAML}}}Subject/{{{SAML}}}NameID").text = "root@corp.example"
    return idp.encode(signed)


def wrapped(idp) -> str:
    genuine = idp.sign(idp.assertion(subject="bob@corp.example", groups=("interns",)))
    forged = idp.assertion(subject="alice@corp.example", groups=("support-engineers",))
    response = etree.Element(f"{{{SAMLP}}}Response", nsmap={"samlp": SAMLP})
    extensions = etree.SubElement(response, f"{{{SAMLP}}}Extensions")
    extensions.append(genuine)
    response.append(forged)
    return idp.encode(response)


def wrong_certificate(idp) -> str:
    other = TestIdP(idp.entity_id)
    return other.encode(other.sign(other.assertion()))


def comment_in_name_id(idp) -> str:
    assertion = idp.assertion(name_id_xml="alice@corp.example<!---->.evil.example")
    return idp.encode(idp.sign(assertion))


XXE = (
    b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    b'<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion">&xxe;</saml:Assertion>'
)
LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    b"<a>&lol3;</a>"
)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda idp: idp.encode(idp.assertion()), "signature does not verify"),
        (tampered, "signature does not verify"),
        (wrapped, "expected one assertion, found 2"),
        (lambda idp: idp.signed(audience="urn:someone-else"), "wrong audience"),
        (lambda idp: idp.signed(lifetime=60, issued_ago=600), "expired"),
        (lambda idp: base64.b64encode(XXE).decode(), "DTDs and entities are not allowed"),
        (lambda idp: base64.b64encode(LAUGHS).decode(), "DTDs and entities are not allowed"),
        (wrong_certificate, "signature does not verify"),
        (comment_in_name_id, "NameID must be plain text"),
        (lambda idp: "not base64 at all!", "not base64"),
    ],
    ids=[
        "unsigned",
        "signed-then-modified",
        "wrapped",
        "wrong-audience",
        "expired",
        "xxe",
        "billion-laughs",
        "wrong-certificate",
        "comment-in-nameid",
        "garbage",
    ],
)
def test_attacks_are_refused_with_a_reason_and_an_audit_row(saml_gateway, idp, make, reason):
    response = with_saml(saml_gateway, make(idp))
    assert response.status_code == 401
    assert reason in response.json()["error"]["reason"]
    assert "messages" not in response.text
    assert reason in audited_reason(saml_gateway, response)
    exchanged = httpx.post(saml_gateway.admin_url + "/saml/exchange", content=make(idp))
    assert exchanged.status_code == 401 and reason in exchanged.json()["error"]["reason"]
    assert reason in audited_reason(saml_gateway, exchanged)


def signed_response(idp, assertion, **attributes) -> str:
    response = etree.Element(
        f"{{{SAMLP}}}Response", nsmap={"samlp": SAMLP}, ID="_r" + "2" * 16, Version="2.0",
        **attributes,
    )  # fmt: skip
    response.append(assertion)
    return idp.encode(idp.sign(response))


def edited(idp, edit) -> str:
    """An assertion the IdP signs after `edit` changed it (the IdP itself wrote it so)."""
    assertion = idp.assertion()
    edit(assertion)
    return idp.encode(idp.sign(assertion))


def second_audience_restriction(assertion):
    conditions = assertion.find(f"{{{SAML}}}Conditions")
    extra = etree.SubElement(conditions, f"{{{SAML}}}AudienceRestriction")
    etree.SubElement(extra, f"{{{SAML}}}Audience").text = "urn:another-sp"


def markup_in_attribute_value(assertion):
    value = assertion.find(f".//{{{SAML}}}AttributeValue")
    value.text = "support-engineers"
    etree.SubElement(value, f"{{{SAML}}}AttributeValue").text = "security"


def two_name_ids(assertion):
    subject = assertion.find(f"{{{SAML}}}Subject")
    extra = etree.Element(f"{{{SAML}}}NameID")
    extra.text = "admin@corp.example"
    subject.insert(1, extra)


HOLDER_OF_KEY = (
    '<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:holder-of-key">'
    f'<saml:SubjectConfirmationData Recipient="{RECIPIENT}" NotOnOrAfter="2099-01-01T00:00:00Z"/>'
    "</saml:SubjectConfirmation>"
)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda idp: idp.signed(recipient="https://other-sp.example/acs"), "is not this service"),
        (
            lambda idp: signed_response(
                idp, idp.assertion(), Destination="https://other-sp.example/acs"
            ),
            "Response Destination",
        ),
        (
            lambda idp: signed_response(idp, idp.assertion(), InResponseTo="_someone-elses"),
            "InResponseTo",
        ),
        (lambda idp: idp.signed(confirmation=""), "no bearer SubjectConfirmation"),
        (lambda idp: idp.signed(confirmation=HOLDER_OF_KEY), "no bearer SubjectConfirmation"),
        (lambda idp: edited(idp, second_audience_restriction), "wrong audience"),
        (lambda idp: edited(idp, markup_in_attribute_value), "AttributeValue holds elements"),
        (lambda idp: edited(idp, two_name_ids), "more than one NameID"),
    ],
    ids=[
        "other-recipient",
        "other-destination",
        "in-response-to",
        "no-confirmation",
        "holder-of-key-only",
        "second-audience-restriction",
        "markup-in-attribute",
        "two-name-ids",
    ],
)
def test_web_sso_bearer_rules_are_checked(saml_gateway, idp, make, reason):
    response = with_saml(saml_gateway, make(idp))
    assert response.status_code == 401, response.text
    assert reason in response.json()["error"]["reason"]
    assert reason in audited_reason(saml_gateway, response)


def test_a_used_assertion_stays_used_across_a_restart(make_gateway, idp, tmp_path):
    provider = provider_config(idp, tmp_path)
    first = make_gateway(how="run", **{"identity.saml": [provider]})
    assertion = idp.signed()
    assert with_saml(first, assertion).status_code == 200
    first.stop()
    audit = first.config.with_name("audit-0.sqlite3")
    second = make_gateway(how="run", **{"identity.saml": [provider], "audit.path": str(audit)})
    again = with_saml(second, assertion)
    assert again.status_code == 401 and "already used (replay)" in again.json()["error"]["reason"]


def test_a_replayed_assertion_is_refused(saml_gateway, idp):
    assertion = idp.signed()
    assert with_saml(saml_gateway, assertion).status_code == 200
    again = with_saml(saml_gateway, assertion)
    assert again.status_code == 401 and "already used (replay)" in again.json()["error"]["reason"]
    assert "already used (replay)" in audited_reason(saml_gateway, again)
    exchanged = httpx.post(saml_gateway.admin_url + "/saml/exchange", content=assertion)
    assert exchanged.status_code == 401


def test_a_signed_response_carrying_the_assertion_is_accepted(saml_gateway, idp):
    response = etree.Element(
        f"{{{SAMLP}}}Response", nsmap={"samlp": SAMLP}, ID="_r" + "1" * 16, Version="2.0"
    )
    response.append(copy.deepcopy(idp.assertion()))
    signed = idp.sign(response)
    assert with_saml(saml_gateway, idp.encode(signed)).status_code == 200


def test_metadata_without_a_signing_certificate_stops_start_up(tmp_path, store, issuer):
    import subprocess

    from tests.harness import BIN, gateway_env, write_config

    metadata = tmp_path / "empty.xml"
    metadata.write_text('<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata"/>')
    provider = {"name": "bad", "entity_id": "x", "audience": SP, "metadata_file": str(metadata),
                "recipients": [RECIPIENT]}  # fmt: skip
    config = write_config(
        tmp_path / "c.yaml", store, issuer, tmp_path / "a.sqlite3", **{"identity.saml": [provider]}
    )
    result = subprocess.run(
        [str(BIN / "tracegate"), "run", "--config", str(config)],
        capture_output=True,
        text=True,
        env=gateway_env(store),
        timeout=60,
    )
    assert result.returncode == 1
    assert "identity.saml bad: no signing certificate in metadata" in result.stderr


def test_the_idp_certificate_can_come_from_a_metadata_url(make_gateway, idp):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    metadata = idp.metadata()

    class Metadata(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/samlmetadata+xml")
            self.send_header("content-length", str(len(metadata)))
            self.end_headers()
            self.wfile.write(metadata)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Metadata)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        provider = {
            "name": "by-url",
            "entity_id": idp.entity_id,
            "audience": SP,
            "recipients": [RECIPIENT],
            "metadata_url": f"http://127.0.0.1:{server.server_address[1]}/metadata.xml",
        }
        gateway = make_gateway(how="run", **{"identity.saml": [provider]})
        assert with_saml(gateway, idp.signed()).status_code == 200
    finally:
        server.shutdown()
        server.server_close()
