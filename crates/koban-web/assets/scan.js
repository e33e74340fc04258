// Camera scanning on the pay page: BarcodeDetector where the browser has it, else jsQR.
// Without script (or without a camera) the payload can be pasted into the field.
(function () {
  'use strict';
  var button = document.getElementById('scan-start');
  var video = document.getElementById('scan-video');
  var field = document.getElementById('payload');
  var problem = document.getElementById('scan-error');
  if (!button || !video || !field || !navigator.mediaDevices) return;
  button.hidden = false;
  button.addEventListener('click', function () {
    navigator.mediaDevices
      .getUserMedia({ video: { facingMode: 'environment' }, audio: false })
      .then(function (stream) {
        video.srcObject = stream;
        video.hidden = false;
        return video.play().then(function () { scan(stream); });
      })
      .catch(function () { problem.hidden = false; });
  });

  function scan(stream) {
    var detector = 'BarcodeDetector' in window ? new window.BarcodeDetector({ formats: ['qr_code'] }) : null;
    var canvas = document.createElement('canvas');
    var context = canvas.getContext('2d', { willReadFrequently: true });
    function found(text) {
      stream.getTracks().forEach(function (track) { track.stop(); });
      video.hidden = true;
      field.value = text;
      field.form.submit();
    }
    function tick() {
      if (detector) {
        detector.detect(video).then(function (codes) {
          if (codes.length) found(codes[0].rawValue); else window.requestAnimationFrame(tick);
        }, function () {
          // A detector that cannot read this stream: jsQR from now on.
          detector = null;
          window.requestAnimationFrame(tick);
        });
        return;
      }
      if (window.jsQR && video.videoWidth) {
        canvas.width = video.videoWidth;
        canvas.height = video.videoHeight;
        context.drawImage(video, 0, 0);
        var image = context.getImageData(0, 0, canvas.width, canvas.height);
        var code = window.jsQR(image.data, image.width, image.height);
        if (code && code.data) { found(code.data); return; }
      }
      window.requestAnimationFrame(tick);
    }
    tick();
  }
})();
