"""The audit trail: one durable row per flow, written before the response is released."""

from tracegate.audit.log import AuditLog, AuditRecord, AuditWriteError

__all__ = ["AuditLog", "AuditRecord", "AuditWriteError"]
