"""Just-in-time approval: rules that hold a request, the approvals and grants, notifications."""

from tracegate.approvals.model import Approval, ApprovalNeed, Vote, request_key
from tracegate.approvals.rules import beyond_scope, request_need, response_need
from tracegate.approvals.store import Actor, ApprovalError, ApprovalStore

__all__ = [
    "Actor",
    "Approval",
    "ApprovalError",
    "ApprovalNeed",
    "ApprovalStore",
    "Vote",
    "beyond_scope",
    "request_key",
    "request_need",
    "response_need",
]
