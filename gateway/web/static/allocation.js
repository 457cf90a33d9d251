// The allocation page: the accounts table (rendered, sorted and filtered here from the
// JSON rows the page carries), an account's explanation on click, the approve and reject
// forms (POST /approvals/{id}/approve|reject with the session's CSRF token), and the
// allocation's state, polled until it is final.
"use strict";

(function () {
  const root = document.getElementById("allocation");
  if (!root) return;
  const allocId = root.dataset.alloc;
  const data = JSON.parse(document.getElementById("rows-data").textContent);
  const table = document.getElementById("accounts");
  const tbody = document.getElementById("accounts-body");
  const shownCount = document.getElementById("shown-count");
  const filterBox = document.getElementById("filter");
  const NUMERIC = new Set([1, 2, 3, 4]);

  const ESC = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"};
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ESC[c]);

  // Quantities arrive as exact decimal strings; only the thousands separators are added.
  function qty(s, signed) {
    if (s === null || s === undefined) return "–";
    const neg = s.startsWith("-");
    const [whole, frac] = s.replace(/^-/, "").split(".");
    const text = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",") + (frac !== undefined ? "." + frac : "");
    if (neg) return "−" + text;
    return signed && Number(s) !== 0 ? "+" + text : text;
  }
  const num = (s) => (s === null || s === undefined ? null : Number(s));
  // "v3" for a rule's own version; a built-in rule's is the engine's ("engine-1").
  const version = (v) => (/^[0-9]/.test(v) ? "v" + esc(v) : "(" + esc(v) + ")");
  const rulesHtml = (rules) => rules.map(
    (r) => `<div><code>${esc(r[0])}</code> ${version(r[1])}: ${esc(r[2])}</div>`).join("");

  const rows = data.map((r) => ({
    id: r[0],
    key: [r[0], num(r[1]), num(r[2]), num(r[3]), num(r[4]), r[5],
          r[6].map((x) => x[0] + " " + x[1]).join(" ")],
    text: [r[0], r[5], ...r[6].map((x) => x.join(" "))].join(" ").toLowerCase(),
    html: `<tr data-account="${esc(r[0])}"><td class="acct"><a href="#" data-explain="${esc(r[0])}">${esc(r[0])}</a></td>`
      + `<td class="num">${qty(r[1])}</td><td class="num">${qty(r[2])}</td>`
      + `<td class="num">${qty(r[3])}</td><td class="num">${qty(r[4], true)}</td>`
      + `<td><span class="badge st-${esc(r[5])}">${esc(r[5])}</span></td>`
      + `<td class="rules">${rulesHtml(r[6])}</td></tr>`,
  }));

  let sortCol = 0;
  let ascending = true;
  let needle = "";

  // Empty values last in either direction; ties by account id, ascending.
  function compare(a, b) {
    const x = a.key[sortCol];
    const y = b.key[sortCol];
    if (x === y || (x === "" && y === "")) return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
    if (x === null || x === "") return 1;
    if (y === null || y === "") return -1;
    const c = NUMERIC.has(sortCol) ? x - y : (x < y ? -1 : 1);
    if (c === 0) return a.id < b.id ? -1 : 1;
    return ascending ? c : -c;
  }

  function render() {
    const started = performance.now();
    const view = needle ? rows.filter((x) => x.text.includes(needle)) : rows.slice();
    view.sort(compare);
    tbody.innerHTML = view.length ? view.map((x) => x.html).join("")
      : '<tr><td colspan="7" class="muted">No account matches the filter.</td></tr>';
    shownCount.textContent = `showing ${view.length} of ${rows.length} accounts`;
    table.querySelectorAll("th[data-col]").forEach((th) => {
      const col = Number(th.dataset.col);
      if (col === sortCol) th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    });
    table.dataset.shown = String(view.length);
    table.dataset.sort = `${sortCol}:${ascending ? "asc" : "desc"}`;
    table.dataset.renderMs = (performance.now() - started).toFixed(1);
  }

  table.querySelectorAll("th[data-col] button").forEach((button) => {
    button.addEventListener("click", () => {
      const col = Number(button.parentElement.dataset.col);
      if (col === sortCol) ascending = !ascending;
      else { sortCol = col; ascending = true; }
      render();
    });
  });

  let pending = null;
  filterBox.addEventListener("input", () => {
    window.clearTimeout(pending);
    pending = window.setTimeout(() => {
      needle = filterBox.value.trim().toLowerCase();
      render();
    }, 60);
  });

  // An account's explanation: GET /allocations/{id}/explain?accounts=A (gateway/audit).
  const panel = document.getElementById("explain");
  tbody.addEventListener("click", async (event) => {
    const link = event.target.closest("a[data-explain]");
    if (!link) return;
    event.preventDefault();
    const account = link.dataset.explain;
    panel.hidden = false;
    panel.innerHTML = `<h3>Why ${esc(account)}</h3><p class="muted">Loading…</p>`;
    try {
      const r = await fetch(`/allocations/${encodeURIComponent(allocId)}/explain?accounts=`
                            + encodeURIComponent(account), {credentials: "same-origin"});
      const body = await r.json();
      if (!r.ok) throw new Error(body.detail || r.status);
      panel.innerHTML = `<h3>Why ${esc(account)}</h3><ol>`
        + body.sentences.map((s) => `<li>${esc(s)}</li>`).join("") + "</ol>";
    } catch (e) {
      panel.innerHTML = `<h3>Why ${esc(account)}</h3><p class="error">No explanation: ${esc(e.message)}</p>`;
    }
    panel.scrollIntoView({block: "nearest"});
  });

  // Votes.
  const message = document.getElementById("action-message");
  function say(text, error) {
    message.hidden = false;
    message.textContent = text;
    message.className = error ? "message error" : "message";
  }
  function detail(body) {
    if (!body || body.detail === undefined) return "no reason given";
    if (Array.isArray(body.detail)) return body.detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
    return String(body.detail);
  }
  async function vote(action, reason, button) {
    button.disabled = true;
    try {
      const r = await fetch(`/approvals/${encodeURIComponent(allocId)}/${action}`, {
        method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json", "X-CSRF-Token": csrfToken()},
        body: JSON.stringify({reason: reason}),
      });
      let body = null;
      try { body = await r.json(); } catch (e) { body = null; }
      if (r.ok) {
        const waiting = body && body.waiting_for && body.waiting_for.length
          ? ` (waiting for ${body.waiting_for.join("; ")})` : "";
        window.sessionStorage.setItem("fixalloc-flash",
          `Your ${action === "approve" ? "approval" : "rejection"} was recorded: the allocation is now ${body ? body.state : "?"}${waiting}.`);
        window.location.reload();
        return;
      }
      say(`Refused (${r.status}): ${detail(body)}`, true);
    } catch (e) {
      say(`The gateway did not answer: ${e.message}`, true);
    }
    button.disabled = false;
  }
  const approveForm = document.getElementById("approve-form");
  if (approveForm) {
    approveForm.addEventListener("submit", (event) => {
      event.preventDefault();
      vote("approve", document.getElementById("approve-reason").value.trim(),
           document.getElementById("approve"));
    });
  }
  const rejectForm = document.getElementById("reject-form");
  if (rejectForm) {
    rejectForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const reason = document.getElementById("reject-reason").value.trim();
      if (!reason) {
        say("A rejection needs a reason: say why the split may not go out.", true);
        document.getElementById("reject-reason").focus();
        return;
      }
      vote("reject", reason, document.getElementById("reject"));
    });
  }

  const flash = window.sessionStorage.getItem("fixalloc-flash");
  if (flash) {
    window.sessionStorage.removeItem("fixalloc-flash");
    const box = document.getElementById("flash");
    box.textContent = flash;
    box.hidden = false;
  }

  // The allocation's state, until it is final.
  function badge(el, text, cls) {
    if (!el || el.textContent === text) return;
    el.textContent = text;
    el.className = "badge " + cls;
  }
  async function poll() {
    try {
      const r = await fetch(`/ui/allocations/${encodeURIComponent(allocId)}/state`,
                            {credentials: "same-origin", cache: "no-store"});
      if (r.ok) {
        const s = await r.json();
        badge(document.getElementById("alloc-status"), s.alloc_status, "st-" + s.alloc_status);
        if (s.approval_state) {
          badge(document.getElementById("approval-state"), "approval " + s.approval_state,
                "st-approval-" + s.approval_state);
          const actions = document.getElementById("actions");
          if (actions && s.approval_state !== "pending") actions.hidden = true;
        }
        if (s.final) return;
      }
    } catch (e) { /* the next poll tries again */ }
    window.setTimeout(poll, 3000);
  }
  if (root.dataset.final !== "true") window.setTimeout(poll, 3000);

  render();
  table.dataset.ready = "1";
  window.fixallocTableReadyMs = performance.now();
})();
