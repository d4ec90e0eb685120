/* Sluice pixel: pageviews (also on SPA navigation) and custom events, sent with sendBeacon.
   Embed: <script defer src="https://YOUR-SLUICE-HOST/pixel.js"></script>
   (data-api="https://…" overrides the API base; it defaults to the script's own origin.)
   Custom events: sluice('event', 'signup', {plan: 'pro'}); calls made before the script
   loads are kept if the page defines: window.sluice = window.sluice || function () {
   (window.sluice.q = window.sluice.q || []).push(arguments); }; */
(function (w, d) {
  "use strict";
  var me = d.currentScript;
  var api = ((me && me.getAttribute("data-api")) || (me ? new URL(me.src).origin : "")).replace(/\/+$/, "");
  var base = api + "/api/v1/pixel";
  var queue = [], config = null, timer = null, lastUrl = null;
  // One draw per page load: the server applies sample_rate to the same number, so an event
  // the script keeps is never sampled out again on arrival.
  var sampleKey = Math.random();

  function enabled(name) {
    if (!config || !config.enabled || sampleKey >= config.sample_rate) return false;
    var f = config.features || {};
    return name === "pageview" ? f.pageviews !== false : f.events !== false;
  }

  function send(batch) {
    var body = JSON.stringify(batch.length === 1 ? batch[0] : batch);
    // text/plain: a CORS-safelisted type, so neither sendBeacon nor fetch needs a preflight.
    var blob = new Blob([body], { type: "text/plain" });
    if (navigator.sendBeacon && navigator.sendBeacon(base + "/track", blob)) return;
    try {
      fetch(base + "/track", { method: "POST", body: body, keepalive: true, mode: "cors",
        credentials: "omit", headers: { "Content-Type": "text/plain" } });
    } catch (e) { /* nothing left to try */ }
  }

  function flush() {
    clearTimeout(timer);
    timer = null;
    if (!config) return;
    var ready = queue.filter(function (e) { return enabled(e.event); });
    queue = [];
    for (var i = 0; i < ready.length; i += 50) send(ready.slice(i, i + 50));
  }

  function track(name, props) {
    queue.push({ event: name, url: location.href, referrer: d.referrer || "",
      properties: props || {}, timestamp: Date.now(), sample_key: sampleKey });
    if (config && !timer) timer = setTimeout(flush, 1000);
  }

  function pageview() {
    if (location.href === lastUrl) return;
    lastUrl = location.href;
    track("pageview", { title: d.title });
  }

  var api_ = function (kind, name, props) {
    if (kind === "event" && name) track(String(name), props);
    else if (kind === "pageview") pageview();
  };

  var pending = (w.sluice && w.sluice.q) || [];
  w.sluice = api_;
  pageview();
  for (var i = 0; i < pending.length; i++) api_.apply(null, pending[i]);

  var push = history.pushState;
  history.pushState = function () {
    var result = push.apply(this, arguments);
    setTimeout(pageview, 0);
    return result;
  };
  w.addEventListener("popstate", function () { setTimeout(pageview, 0); });
  d.addEventListener("visibilitychange", function () { if (d.visibilityState === "hidden") flush(); });
  w.addEventListener("pagehide", flush);

  fetch(base + "/config", { credentials: "omit" })
    .then(function (r) { return r.ok ? r.json() : { enabled: false }; })
    .then(function (c) { config = c; flush(); })
    .catch(function () { config = { enabled: false }; queue = []; });
})(window, document);
