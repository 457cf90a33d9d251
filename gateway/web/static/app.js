// fixalloc pages: what every page shares. The blotter refreshes its body in place.
"use strict";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

function startRefresh(box) {
  const url = box.dataset.refresh;
  const every = Number(box.dataset.every) || 3000;
  const stamp = document.getElementById("refreshed");
  let last = null;
  async function tick() {
    try {
      const r = await fetch(url, {credentials: "same-origin", cache: "no-store",
                                  headers: {"Accept": "text/html"}});
      if (r.redirected && new URL(r.url).pathname === "/ui/login") {
        // The session ended: log in again, then come back to this page.
        window.location.assign("/ui/login?next=" + encodeURIComponent(window.location.pathname));
        return;
      }
      if (r.ok) {
        const html = await r.text();
        if (html !== last) {
          if (last !== null || html.trim() !== box.innerHTML.trim()) box.innerHTML = html;
          last = html;
        }
        if (stamp) stamp.textContent = "updated " + new Date().toLocaleTimeString();
      } else if (stamp) {
        stamp.textContent = "refresh failed (" + r.status + ")";
      }
    } catch (e) {
      if (stamp) stamp.textContent = "refresh failed: the gateway did not answer";
    }
    window.setTimeout(tick, every);
  }
  window.setTimeout(tick, every);
}

document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("blotter");
  if (box) startRefresh(box);
});
