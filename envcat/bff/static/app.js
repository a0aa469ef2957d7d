/* EnvCat conveniences. Every page works without this file. */
(function () {
  "use strict";

  function onReady(fn) {
    if (document.readyState !== "loading") { fn(); } else { document.addEventListener("DOMContentLoaded", fn); }
  }

  function pad(n) { return n < 10 ? "0" + n : String(n); }

  function startCountdown(el) {
    var left = parseInt(el.getAttribute("data-countdown"), 10);
    if (isNaN(left)) { return; }
    var end = Date.now() + left * 1000;
    function tick() {
      var s = Math.max(0, Math.round((end - Date.now()) / 1000));
      el.textContent = Math.floor(s / 60) + ":" + pad(s % 60);
      if (s === 0) { el.classList.add("expired"); el.textContent += " (expired)"; return; }
      if (s <= 60) { el.classList.add("soon"); }
      window.setTimeout(tick, 1000);
    }
    tick();
  }

  function copyText(text, button) {
    if (!navigator.clipboard) { return; }
    navigator.clipboard.writeText(text).then(function () {
      var label = button.textContent;
      button.textContent = "Copied";
      window.setTimeout(function () { button.textContent = label; }, 1500);
    });
  }

  onReady(function () {
    document.documentElement.classList.add("js");

    document.querySelectorAll("[data-countdown]").forEach(startCountdown);

    document.querySelectorAll("[data-select]").forEach(function (button) {
      button.addEventListener("click", function () {
        var form = document.getElementById(button.getAttribute("data-target"));
        var checked = button.getAttribute("data-select") === "all";
        form.querySelectorAll("input[type=checkbox][name=include_keys]").forEach(function (box) {
          box.checked = checked;
        });
      });
    });

    document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
      // The change submits the form, so its button would only be noise.
      select.form.querySelectorAll("button[type=submit]").forEach(function (button) { button.hidden = true; });
    });

    document.querySelectorAll("[data-copy]").forEach(function (button) {
      button.addEventListener("click", function () {
        var source = document.getElementById(button.getAttribute("data-copy"));
        if (source) { copyText(source.textContent, button); }
      });
    });

    document.querySelectorAll("[data-print]").forEach(function (button) {
      button.addEventListener("click", function () { window.print(); });
    });

    document.querySelectorAll("[data-copy-text]").forEach(function (button) {
      button.addEventListener("click", function () { copyText(button.getAttribute("data-copy-text"), button); });
    });

    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
      });
    });
  });
})();
