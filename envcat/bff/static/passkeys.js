/* Passkeys (issue #20): register one on the account page; sign approvals with it.
   The challenge of an approval is the SHA-256 of the approval statement the server
   builds for exactly the chosen bundle and keys (and, for a break-glass release, its
   reason); the terminal checks the signature. Where the workspace requires approvers to
   type the verification phrase, the typed phrase goes with the statement request, which
   the server refuses before any passkey prompt when it is wrong. */
(function () {
  "use strict";

  function fromB64url(text) {
    var b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) { b64 += "="; }
    var raw = atob(b64), bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) { bytes[i] = raw.charCodeAt(i); }
    return bytes.buffer;
  }

  function toB64url(buffer) {
    var bytes = new Uint8Array(buffer), raw = "";
    for (var i = 0; i < bytes.length; i++) { raw += String.fromCharCode(bytes[i]); }
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function csrfOf(form) {
    var field = form.querySelector("input[name=csrf_token]");
    return field ? field.value : "";
  }

  function post(url, form, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfOf(form) },
      body: JSON.stringify(body || {})
    }).then(function (response) {
      return response.json().then(function (data) {
        if (!response.ok) { throw new Error(data.message || "The server refused."); }
        return data;
      });
    });
  }

  function say(target, text, isError) {
    if (!target) { return; }
    target.textContent = text;
    target.classList.toggle("error", Boolean(isError));
  }

  function register(form) {
    var status = form.querySelector("[data-passkey-status]");
    var name = form.querySelector("input[name=passkey_name]").value.trim();
    if (!window.PublicKeyCredential) { say(status, "This browser does not support passkeys.", true); return; }
    say(status, "Follow your browser's prompt…");
    post("/account/passkeys/options", form).then(function (data) {
      var options = data.options;
      options.challenge = fromB64url(options.challenge);
      options.user.id = fromB64url(options.user.id);
      (options.excludeCredentials || []).forEach(function (item) { item.id = fromB64url(item.id); });
      return navigator.credentials.create({ publicKey: options });
    }).then(function (credential) {
      var response = credential.response;
      return post("/account/passkeys", form, {
        name: name,
        credential: {
          id: credential.id,
          rawId: toB64url(credential.rawId),
          type: credential.type,
          response: {
            clientDataJSON: toB64url(response.clientDataJSON),
            attestationObject: toB64url(response.attestationObject),
            transports: response.getTransports ? response.getTransports() : []
          },
          clientExtensionResults: {}
        }
      });
    }).then(function () {
      window.location.assign("/account");  // one navigation: the list now shows the new passkey
    }).catch(function (error) { say(status, error.message || String(error), true); });
  }

  function approve(form) {
    var status = form.querySelector("[data-passkey-status]") || document.querySelector("[data-passkey-status]");
    var data = new FormData(form);
    var body = { bundle_id: data.get("bundle_id"), include_keys: data.getAll("include_keys") };
    // Where the workspace requires approvers to type the phrase, the server checks it
    // before the ceremony (a wrong one costs no passkey prompt); the form carries it again.
    var phrase = form.querySelector("input[name=phrase]");
    if (phrase) { body.phrase = phrase.value; }
    // The break-glass form: the passkey signs the reason too, so the terminal can
    // check it; it must be written before the ceremony and stays as signed.
    var reason = form.querySelector("input[name=reason]");
    if (reason) {
      if (!reason.value.trim()) {
        say(status, "Write the reason first: your passkey signs it with the release.", true);
        reason.focus();
        return;
      }
      body.reason = reason.value;
    }
    if (!window.PublicKeyCredential) { say(status, "This browser does not support passkeys.", true); return; }
    say(status, "Confirm with your passkey…");
    if (reason) { reason.readOnly = true; }
    if (phrase) { phrase.readOnly = true; }  // what the server checked is what the form sends
    var statement;
    post(form.getAttribute("data-passkey-approve"), form, body).then(function (challenge) {
      statement = challenge.statement;
      return navigator.credentials.get({
        publicKey: {
          challenge: fromB64url(challenge.challenge),
          rpId: challenge.rp_id,
          timeout: challenge.timeout_ms,
          userVerification: "required",
          allowCredentials: challenge.allow_credentials.map(function (id) {
            return { type: "public-key", id: fromB64url(id) };
          })
        }
      });
    }).then(function (assertion) {
      var response = assertion.response;
      form.querySelector("input[name=passkey_statement]").value = JSON.stringify(statement);
      form.querySelector("input[name=passkey_credential]").value = JSON.stringify({
        id: assertion.id,
        rawId: toB64url(assertion.rawId),
        type: assertion.type,
        response: {
          authenticatorData: toB64url(response.authenticatorData),
          clientDataJSON: toB64url(response.clientDataJSON),
          signature: toB64url(response.signature),
          userHandle: response.userHandle ? toB64url(response.userHandle) : null
        },
        clientExtensionResults: {}
      });
      say(status, "Signed; approving…");
      form.submit();
    }).catch(function (error) {
      if (reason) { reason.readOnly = false; }
      if (phrase) { phrase.readOnly = false; }
      say(status, error.message || String(error), true);
    });
  }

  function onReady(fn) {
    if (document.readyState !== "loading") { fn(); } else { document.addEventListener("DOMContentLoaded", fn); }
  }

  onReady(function () {
    document.querySelectorAll("form[data-passkey-register]").forEach(function (form) {
      form.addEventListener("submit", function (event) { event.preventDefault(); register(form); });
    });
    document.querySelectorAll("form[data-passkey-approve]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (form.querySelector("input[name=passkey_credential]").value) { return; }
        event.preventDefault();
        approve(form);
      });
    });
  });
})();
