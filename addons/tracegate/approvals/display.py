"""Requester-controlled text (the reason given, the requested key, the subject) as each channel
that shows it to approvers must receive it: it may inform, never act (no links, mentions or
markup in Slack, no fake lines in mitmweb's comment or the console)."""

from __future__ import annotations

import re

MAX_TEXT = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]+")
_SLACK_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_WORD_JOINER = "\u2060"


def plain(text: str, limit: int = MAX_TEXT) -> str:
    """One line: control and bidi-override characters become a space, cut at `limit`."""
    flat = _CONTROL.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def slack(text: str, limit: int = MAX_TEXT) -> str:
    """Requester text inside Slack mrkdwn: `& < >` escaped (so no `<url|label>` links and no
    `<!channel>` or `<@U…>` mentions), bare `@here`/`@channel` and URLs broken with a word
    joiner so Slack renders neither a ping nor a link, and formatting characters neutralised."""
    text = plain(text, limit)
    text = "".join(_SLACK_ESCAPES.get(c, c) for c in text)
    text = re.sub(r"(?<![\w.])@(?=\w)", "@" + _WORD_JOINER, text)  # @here, @channel, @user
    text = re.sub(
        r"(?i)\b(https?|ftp|mailto|slack|file|javascript|data|tel):", rf"\1{_WORD_JOINER}:", text
    )
    text = re.sub(r"(?i)\bwww\.", "www" + _WORD_JOINER + ".", text)
    return re.sub(r"([*_~`])", _WORD_JOINER + r"\1", text)
