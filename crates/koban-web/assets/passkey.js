// Passkeys on Koban's pages: enrolling one as the first factor, signing in with one, and
// confirming an action (step-up) with one. Only the browser can talk to an authenticator, so
// this is script; every page still works with a code from an authenticator app.
(function () {
  'use strict';
  if (!window.PublicKeyCredential || !navigator.credentials) return;

  function b64urlToBuffer(text) {
    var base64 = text.replace(/-/g, '+').replace(/_/g, '/');
    while (base64.length % 4) base64 += '=';
    var raw = atob(base64);
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes.buffer;
  }
  function bufferToB64url(buffer) {
    var bytes = new Uint8Array(buffer);
    var raw = '';
    for (var i = 0; i < bytes.length; i++) raw += String.fromCharCode(bytes[i]);
    return btoa(raw).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }
  function creationOptions(options) {
    var o = options.publicKey;
    o.challenge = b64urlToBuffer(o.challenge);
    o.user.id = b64urlToBuffer(o.user.id);
    (o.excludeCredentials || []).forEach(function (c) { c.id = b64urlToBuffer(c.id); });
    return { publicKey: o };
  }
  function requestOptions(options) {
    var o = options.publicKey;
    o.challenge = b64urlToBuffer(o.challenge);
    (o.allowCredentials || []).forEach(function (c) { c.id = b64urlToBuffer(c.id); });
    return { publicKey: o };
  }
  function registration(credential) {
    return {
      id: credential.id,
      rawId: bufferToB64url(credential.rawId),
      type: credential.type,
      response: {
        attestationObject: bufferToB64url(credential.response.attestationObject),
        clientDataJSON: bufferToB64url(credential.response.clientDataJSON),
      },
      extensions: credential.getClientExtensionResults(),
    };
  }
  function assertion(credential) {
    var r = credential.response;
    return {
      id: credential.id,
      rawId: bufferToB64url(credential.rawId),
      type: credential.type,
      response: {
        authenticatorData: bufferToB64url(r.authenticatorData),
        clientDataJSON: bufferToB64url(r.clientDataJSON),
        signature: bufferToB64url(r.signature),
        userHandle: r.userHandle ? bufferToB64url(r.userHandle) : null,
      },
      extensions: credential.getClientExtensionResults(),
    };
  }
  // The session's anti-CSRF token, which the API wants in a header for cookie sessions.
  function csrf() {
    var match = document.cookie.match(/(?:^|; )koban_csrf=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : '';
  }
  function post(path, body) {
    return fetch(path, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'content-type': 'application/json', 'x-csrf-token': csrf() },
      body: body === undefined ? '' : JSON.stringify(body),
    }).then(function (answer) {
      return answer.json().catch(function () { return {}; }).then(function (json) {
        if (!answer.ok) throw new Error(json.detail || String(answer.status));
        return json;
      });
    });
  }
  function failed(box) {
    return function () {
      var problem = box.querySelector('.passkey-error');
      if (problem) problem.hidden = false;
    };
  }

  // Enrolment: the first factor, with recovery codes shown on this page once.
  var enrol = document.getElementById('passkey-enrol');
  if (enrol) {
    enrol.hidden = false;
    enrol.querySelector('button').addEventListener('click', function () {
      var ceremony;
      post('/v1/factors/passkeys/register/start')
        .then(function (started) {
          ceremony = started.ceremony_id;
          return navigator.credentials.create(creationOptions(started.options));
        })
        .then(function (credential) {
          return post('/v1/factors/passkeys/register/finish', { ceremony_id: ceremony, credential: registration(credential) });
        })
        .then(function (done) {
          var list = document.getElementById('passkey-codes');
          (done.recovery_codes || []).forEach(function (code) {
            var item = document.createElement('li');
            var text = document.createElement('code');
            text.textContent = code;
            item.appendChild(text);
            list.appendChild(item);
          });
          var file = new Blob(['Koban recovery codes\n\n' + (done.recovery_codes || []).join('\n') + '\n'], { type: 'text/plain' });
          document.getElementById('passkey-download').href = URL.createObjectURL(file);
          document.getElementById('enrol-choices').hidden = true;
          document.getElementById('passkey-done').hidden = false;
          document.getElementById('passkey-done').focus();
        })
        .catch(failed(enrol));
    });
  }

  // A further passkey, from the security centre: the step-up was answered on the page
  // before, which carries the options of this very ceremony.
  var add = document.getElementById('passkey-add');
  if (add) {
    add.hidden = false;
    add.querySelector('button').addEventListener('click', function () {
      var options = JSON.parse(add.getAttribute('data-options'));
      navigator.credentials.create(creationOptions(options))
        .then(function (credential) {
          return post('/v1/factors/passkeys/register/finish', {
            ceremony_id: add.getAttribute('data-ceremony'), credential: registration(credential),
          });
        })
        .then(function () {
          add.hidden = true;
          var done = document.getElementById('passkey-added');
          done.hidden = false;
          done.focus();
        })
        .catch(failed(add));
    });
  }

  // Sign-in: the second step with a passkey instead of a code.
  var signin = document.getElementById('passkey-signin');
  if (signin) {
    signin.hidden = false;
    signin.querySelector('button').addEventListener('click', function () {
      var ceremony;
      post('/v1/login/passkey/start')
        .then(function (started) {
          ceremony = started.ceremony_id;
          return navigator.credentials.get(requestOptions(started.options));
        })
        .then(function (credential) {
          return post('/v1/login/passkey/finish', { ceremony_id: ceremony, credential: assertion(credential) });
        })
        .then(function () { window.location.assign('/home'); })
        .catch(failed(signin));
    });
  }

  // Step-up: the page carries the options bound to this very action; the answer goes back
  // with the same form as a code would.
  var step = document.getElementById('passkey-step-up');
  if (step) {
    step.hidden = false;
    step.querySelector('button').addEventListener('click', function () {
      var options = JSON.parse(step.getAttribute('data-options'));
      navigator.credentials.get(requestOptions(options))
        .then(function (credential) {
          var form = document.getElementById('step-up-form');
          form.querySelector('input[name=passkey]').value = JSON.stringify(assertion(credential));
          form.submit();
        })
        .catch(failed(step));
    });
  }
})();
