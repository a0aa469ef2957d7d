/* Mounts Clerk's sign-in or sign-up component (AUTH_PROVIDER=clerk only). */
(function () {
  "use strict";

  function whenClerk(fn, triesLeft) {
    if (window.Clerk) { fn(window.Clerk); return; }
    if (triesLeft <= 0) { return; }
    window.setTimeout(function () { whenClerk(fn, triesLeft - 1); }, 100);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var mount = document.getElementById("clerk-mount");
    if (!mount) { return; }
    var target = mount.getAttribute("data-redirect-url") || "/bundles";
    whenClerk(function (clerk) {
      clerk.load().then(function () {
        if (mount.getAttribute("data-signed-out") && clerk.user) {
          clerk.signOut().then(function () { window.location.reload(); });
          return;
        }
        if (clerk.user) { window.location.assign(target); return; }
        mount.textContent = "";
        var options = { forceRedirectUrl: target, fallbackRedirectUrl: target };
        if (mount.getAttribute("data-mode") === "sign-up") {
          clerk.mountSignUp(mount, options);
        } else {
          clerk.mountSignIn(mount, options);
        }
      });
    }, 100);
  });
})();
