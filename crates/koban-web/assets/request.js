// A payment request at the till: while it is open, look at its page again every few seconds
// and show it anew once the customer has paid or it has expired. Without script, the page's
// "Check again" link does the same by hand.
(function () {
  'use strict';
  var box = document.getElementById('request');
  if (!box || !box.getAttribute('data-refresh')) return;
  var every = Number(box.getAttribute('data-refresh')) * 1000;
  function look() {
    fetch(window.location.pathname, { credentials: 'same-origin', cache: 'no-store' })
      .then(function (answer) { return answer.ok ? answer.text() : Promise.reject(answer.status); })
      .then(function (html) {
        var page = new DOMParser().parseFromString(html, 'text/html');
        var fresh = page.getElementById('request');
        if (fresh && fresh.getAttribute('data-status') !== box.getAttribute('data-status')) {
          window.location.reload();
        } else {
          window.setTimeout(look, every);
        }
      })
      .catch(function () { window.setTimeout(look, every * 2); });
  }
  window.setTimeout(look, every);
})();
