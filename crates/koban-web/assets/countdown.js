// The payment code page: a live countdown to expiry, a new code shortly before it expires
// (at most a few times, then the customer asks for one), and the payment shown as soon as a
// till has charged the code. Without script the page still shows the code and its expiry.
(function () {
  'use strict';
  var box = document.querySelector('[data-expires-at]');
  if (!box) return;
  var expires = Number(box.getAttribute('data-expires-at'));
  var skew = Number(box.getAttribute('data-now')) - Date.now();
  var id = box.getAttribute('data-code-id');
  var renewals = Number(box.getAttribute('data-renewals'));
  var out = document.getElementById('seconds-left');
  var renew = document.getElementById('code-renew');
  var leaving = false;
  function tick() {
    var left = Math.max(0, Math.round((expires - (Date.now() + skew)) / 1000));
    out.textContent = String(left);
    if (left <= 5 && !leaving && renew && renewals < 5) {
      leaving = true;
      renew.submit();
    }
  }
  function poll() {
    if (leaving) return;
    fetch('/v1/payment-codes', { credentials: 'same-origin', headers: { accept: 'application/json' } })
      .then(function (answer) { return answer.ok ? answer.json() : null; })
      .then(function (live) {
        if (!live || leaving) return;
        var still = live.some(function (code) { return code.id === id; });
        if (!still) {
          leaving = true;
          window.location.assign('/pay/code/' + encodeURIComponent(id));
        }
      }, function () {});
  }
  tick();
  window.setInterval(tick, 250);
  window.setInterval(poll, 1500);
})();
