// A revealed card number: counts down and takes the details off the screen after 30 seconds.
// Without script the details stay until the page is left (it is never stored, so Back does not
// bring them back); a timed refresh would cut short someone who needs longer to read.
(function () {
  'use strict';
  var box = document.querySelector('[data-hide-after]');
  if (!box) return;
  var left = Number(box.getAttribute('data-hide-after'));
  var out = document.getElementById('reveal-left');
  function hide() {
    box.remove();
    var gone = document.getElementById('reveal-hidden');
    if (gone) gone.hidden = false;
  }
  // Leaving the page takes the details off it too, so Back or a restored tab never shows them.
  window.addEventListener('pagehide', hide);
  var timer = window.setInterval(function () {
    left -= 1;
    if (out) out.textContent = String(Math.max(0, left));
    if (left <= 0) {
      window.clearInterval(timer);
      hide();
    }
  }, 1000);
})();
