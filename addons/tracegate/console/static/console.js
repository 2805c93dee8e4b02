// The approvals page: lists what waits for this approver (polling every 2 s) and sends the
// decision with the session's CSRF token. Every value is set as text, never as markup.
"use strict";

(function () {
  const root = document.getElementById("approvals");
  if (!root) return;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const api = root.dataset.api;
  const comments = {};

  function text(tag, value, cls) {
    const node = document.createElement(tag);
    node.textContent = value == null ? "" : String(value);
    if (cls) node.className = cls;
    return node;
  }

  function waited(created) {
    const seconds = Math.max(0, Math.round(Date.now() / 1000 - created));
    return seconds < 120 ? seconds + " s" : Math.round(seconds / 60) + " min";
  }

  function card(item) {
    const a = item.approval;
    const box = document.createElement("div");
    box.className = "card";
    box.id = "approval-" + a.id;
    box.dataset.approval = a.id;
    box.appendChild(text("h3", a.request.operation + " " + a.request.resource));
    const facts = document.createElement("dl");
    const rows = [
      ["requester", a.requester.subject],
      ["role / purpose", a.role + " / " + a.purpose],
      ["request", a.request.method + " " + a.request.path],
      ["rule", a.rule_id],
      ["why held", a.why],
      ["reason given", a.reason || "(none)"],
      ["detectors fired", item.detectors.length ? item.detectors.join(", ")
        : (a.phase === "request" ? "(held before the answer was read)" : "(none)")],
      ["waiting", waited(a.created_at)],
      ["votes", a.votes.length + " of " + a.required +
        (a.votes.length ? " (" + a.votes.map(v => v.subject).join(", ") + ")" : "")],
    ];
    for (const [k, v] of rows) {
      facts.appendChild(text("dt", k));
      facts.appendChild(text("dd", v, "fact-" + k.replace(/[^a-z]/g, "")));
    }
    box.appendChild(facts);
    const comment = document.createElement("textarea");
    comment.placeholder = "comment (recorded with your decision)";
    comment.value = comments[a.id] || "";
    comment.addEventListener("input", () => { comments[a.id] = comment.value; });
    box.appendChild(comment);
    const status = text("p", item.own ? "You asked for this: another approver decides." : "",
      "error status");
    for (const verb of ["approve", "deny"]) {
      const button = text("button", verb === "approve" ? "Approve" : "Deny");
      button.className = verb;
      button.disabled = item.own;
      button.addEventListener("click", () => decide(a.id, verb, comment.value, status));
      box.appendChild(button);
    }
    box.appendChild(status);
    return box;
  }

  async function decide(id, verb, comment, status) {
    status.textContent = "sending…";
    const answer = await fetch(api + "/" + encodeURIComponent(id) + "/" + verb, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({ comment: comment }),
      credentials: "same-origin",
    });
    const body = await answer.json().catch(() => ({}));
    if (answer.ok) {
      status.className = "ok status";
      status.textContent = "recorded: " + body.approval.status;
      delete comments[id];
    } else {
      status.className = "error status";
      status.textContent = (body.error && body.error.reason) || ("refused: " + answer.status);
    }
  }

  async function refresh() {
    try {
      const answer = await fetch(api, { credentials: "same-origin" });
      if (answer.status === 401) { window.location = "/console/login"; return; }
      const body = await answer.json();
      const keep = {};
      for (const node of root.querySelectorAll(".status")) {
        const id = node.parentNode.dataset.approval;
        if (node.textContent) keep[id] = [node.className, node.textContent];
      }
      root.replaceChildren();
      if (!body.approvals.length) root.appendChild(text("p", "Nothing waits for a decision.", "empty"));
      for (const item of body.approvals) {
        const box = card(item);
        if (keep[item.approval.id]) {
          const status = box.querySelector(".status");
          [status.className, status.textContent] = keep[item.approval.id];
        }
        root.appendChild(box);
      }
    } catch (error) {
      root.replaceChildren(text("p", "The gateway did not answer; retrying.", "error"));
    }
  }

  refresh();
  setInterval(refresh, 2000);
})();
