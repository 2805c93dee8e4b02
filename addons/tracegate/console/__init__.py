"""The console for approvers and auditors: OIDC sign-in, server-side sessions, pages, charts."""
