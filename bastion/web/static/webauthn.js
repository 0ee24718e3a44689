// The only script in Bastion: WebAuthn needs navigator.credentials, which HTML forms cannot reach.
// A form marked data-webauthn="create" or "get" runs the ceremony with the options embedded in the
// page, puts the result (JSON, base64url fields) into its "credential" field and submits normally,
// so the usual CSRF token and server-side checks apply.
"use strict";
(function () {
  function decode(text) {
    const b64 = text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4);
    return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)).buffer;
  }
  function encode(buffer) {
    let s = "";
    new Uint8Array(buffer).forEach((b) => { s += String.fromCharCode(b); });
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function publicKey(options, kind) {
    options.challenge = decode(options.challenge);
    if (kind === "create") {
      options.user.id = decode(options.user.id);
      (options.excludeCredentials || []).forEach((c) => { c.id = decode(c.id); });
    } else {
      (options.allowCredentials || []).forEach((c) => { c.id = decode(c.id); });
    }
    return options;
  }
  function toJSON(cred) {
    const r = cred.response;
    const out = { id: cred.id, rawId: encode(cred.rawId), type: cred.type,
                  clientExtensionResults: cred.getClientExtensionResults(),
                  response: { clientDataJSON: encode(r.clientDataJSON) } };
    if (cred.authenticatorAttachment) out.authenticatorAttachment = cred.authenticatorAttachment;
    if (r.attestationObject) {
      out.response.attestationObject = encode(r.attestationObject);
      out.response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      out.response.authenticatorData = encode(r.authenticatorData);
      out.response.signature = encode(r.signature);
      if (r.userHandle) out.response.userHandle = encode(r.userHandle);
    }
    return out;
  }
  document.querySelectorAll("form[data-webauthn]").forEach((form) => {
    const status = form.querySelector("[role=status]");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!window.PublicKeyCredential) {
        status.textContent = "This browser does not support security keys.";
        return;
      }
      const kind = form.dataset.webauthn;
      const options = JSON.parse(document.getElementById(form.dataset.options).textContent);
      status.textContent = "Waiting for your security key…";
      try {
        const cred = kind === "create"
          ? await navigator.credentials.create({ publicKey: publicKey(options, kind) })
          : await navigator.credentials.get({ publicKey: publicKey(options, kind) });
        form.querySelector("input[name=credential]").value = JSON.stringify(toJSON(cred));
        form.submit();
      } catch (err) {
        status.textContent = "The security key did not complete: " + err.message;
      }
    });
  });
})();
