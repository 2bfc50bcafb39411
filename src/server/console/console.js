// keygate console: keeps the pending approvals current without a reload. The server
// sends an `approvals` event carrying the pending set's version whenever it changes;
// when it differs from the list shown, the list is fetched again and swapped in, unless
// the approver is typing in one of its forms (then a notice offers a reload instead).
"use strict";
(function () {
  const current = () => document.getElementById("approvals");
  if (!current() || !window.EventSource) return;
  const events = new EventSource("/console/events");
  let fetching = false;
  events.addEventListener("approvals", async (e) => {
    const list = current();
    if (!list || e.data === list.dataset.version || fetching) return;
    if (list.contains(document.activeElement) && document.activeElement.tagName !== "BODY") {
      const stale = document.getElementById("stale");
      if (stale) stale.hidden = false;
      return;
    }
    fetching = true;
    try {
      const r = await fetch("/console/approvals/list", { credentials: "same-origin" });
      if (!r.ok) return;
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      const fresh = doc.getElementById("approvals");
      if (fresh) current().replaceWith(document.adoptNode(fresh));
    } finally {
      fetching = false;
    }
  });
})();
