/* The approver inbox: re-reads /requests.json every few seconds and redraws the pending
   list with textContent only (no HTML from the server). The page works without it. */
(function () {
  "use strict";

  function el(tag, text, className) {
    var node = document.createElement(tag);
    if (text !== undefined) { node.textContent = text; }
    if (className) { node.className = className; }
    return node;
  }

  function row(item) {
    var tr = el("tr");
    tr.setAttribute("data-request", item.id);
    var phrase = el("td");
    // null where the workspace requires approvers to type the phrase: never shown then
    phrase.appendChild(item.phrase ? el("strong", item.phrase, "phrase-inline")
      : el("span", "typed on the approval page", "muted"));
    tr.appendChild(phrase);
    var bundle = el("td");
    bundle.appendChild(item.bundle ? el("code", item.bundle) : el("span", "none named", "muted"));
    tr.appendChild(bundle);
    var where = el("td");
    var facts = el("dl", undefined, "facts compact");
    item.context.forEach(function (fact) {
      var pair = el("div");
      pair.appendChild(el("dt", fact.label));
      var dd = el("dd");
      dd.appendChild(el("code", fact.value));
      pair.appendChild(dd);
      facts.appendChild(pair);
    });
    where.appendChild(facts);
    tr.appendChild(where);
    var age = el("td", Math.floor(item.age_seconds / 60) + " min ago", "small");
    tr.appendChild(age);
    tr.appendChild(el("td", item.approvals));
    var open = el("td", undefined, "actions");
    var link = el("a", "Open", "button small");
    link.href = item.href;
    open.appendChild(link);
    tr.appendChild(open);
    return tr;
  }

  function start(box) {
    var url = box.getAttribute("data-inbox");
    var every = (parseInt(box.getAttribute("data-poll"), 10) || 3) * 1000;
    var rows = document.getElementById("inbox-rows");
    var table = document.getElementById("inbox-table");
    var empty = document.getElementById("inbox-empty");
    function draw(items) {
      var fresh = document.createDocumentFragment();
      items.forEach(function (item) { fresh.appendChild(row(item)); });
      rows.replaceChildren(fresh);
      table.hidden = items.length === 0;
      empty.hidden = items.length !== 0;
    }
    function poll() {
      fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (data) { if (data) { draw(data.requests); } })
        .catch(function () { /* offline for a moment: try again next time */ })
        .then(function () { window.setTimeout(poll, every); });
    }
    window.setTimeout(poll, every);
  }

  function onReady(fn) {
    if (document.readyState !== "loading") { fn(); } else { document.addEventListener("DOMContentLoaded", fn); }
  }

  onReady(function () {
    var box = document.querySelector("[data-inbox]");
    if (box) { start(box); }
  });
}());
