"""The approval desk and store on a real SQLite file, without a proxy."""

from __future__ import annotations

import asyncio
import time

import pytest

from tracegate.approvals import Actor, ApprovalError, ApprovalNeed, ApprovalStore
from tracegate.approvals.desk import ApprovalDesk
from tracegate.approvals.notify import Webhook
from tracegate.config import ApprovalRule, ScopeConfig
from tracegate.exchange import Exchange, IncomingRequest
from tracegate.grant import Grant
from tracegate.identity.principal import Principal
from tracegate.stores.s3 import Access

RULE = ApprovalRule.model_validate(
    {"id": "r", "when": {"always": True}, "approvers": {"roles": ["security"]}, "required": 2}
)
SCOPE = ScopeConfig(operations=["GetObject"], prefixes=["traces/"])
ALICE = Principal("alice", "https://issuer", "idp")
SEC1 = Actor("sec1", "https://issuer", ("security",))
SEC2 = Actor("sec2", "https://issuer", ("security",))


def exchange(flow_id: str, key: str = "traces/a.json") -> Exchange:
    request = IncomingRequest("GET", f"/traces/{key}", headers={"x-tracegate-reason": "INC-1"})
    ex = Exchange(flow_id, request, "v1")
    ex.principal = ALICE
    ex.grant = Grant("support", "incident", SCOPE)
    ex.access = Access("GetObject", "traces", key=key)
    return ex


@pytest.fixture
def desk(tmp_path):
    store = ApprovalStore(tmp_path / "audit.sqlite3")
    store.open()
    yield ApprovalDesk(store, Webhook(None, 1), "http://admin")
    store.close()


def test_concurrent_holds_of_one_request_join_a_single_approval(desk):
    async def many():
        return await asyncio.gather(
            *(
                desk.admit(exchange(f"f{n}"), ApprovalNeed(RULE, "always"), "request")
                for n in range(10)
            )
        )

    approvals = asyncio.run(many())
    assert len({a.id for a in approvals}) == 1
    events = asyncio.run(desk.store.events(approvals[0].id))
    assert [e["event"] for e in events] == ["requested"] + ["joined"] * 9


def test_votes_count_distinct_approvers_and_then_grant(desk):
    async def run():
        approval = await desk.admit(exchange("f1"), ApprovalNeed(RULE, "always"), "request")
        with pytest.raises(ApprovalError) as self_vote:
            await desk.store.decide(
                approval.id, Actor("alice", "https://issuer", ("security",)), True, "endpoint"
            )
        assert self_vote.value.code == "SelfApproval"
        with pytest.raises(ApprovalError) as outsider:
            await desk.store.decide(approval.id, Actor("bob", "https://issuer"), True, "endpoint")
        assert outsider.value.code == "NotAnApprover"
        first = await desk.store.decide(approval.id, SEC1, True, "endpoint")
        assert first.status == "pending"
        with pytest.raises(ApprovalError) as twice:
            await desk.store.decide(approval.id, SEC1, True, "endpoint")
        assert twice.value.code == "AlreadyApproved"
        second = await desk.store.decide(approval.id, SEC2, True, "endpoint")
        assert second.status == "approved" and second.grant_until > time.time()
        assert await desk.admit(exchange("f2"), ApprovalNeed(RULE, "always"), "request") is None
        other = await desk.admit(
            exchange("f3", "traces/b.json"), ApprovalNeed(RULE, "x"), "request"
        )
        assert other is not None and other.id != approval.id

    asyncio.run(run())


def test_pending_approvals_are_loaded_again_after_a_restart(tmp_path):
    path = tmp_path / "audit.sqlite3"
    store = ApprovalStore(path)
    store.open()
    approval = asyncio.run(
        ApprovalDesk(store, Webhook(None, 1), "").admit(
            exchange("f1"), ApprovalNeed(RULE, "always"), "request"
        )
    )
    store.close()
    again = ApprovalStore(path)
    again.open()
    try:
        assert again.status(approval.id) == "pending"
        assert again.find_pending("alice", "https://issuer", approval.request_key) is not None
    finally:
        again.close()
