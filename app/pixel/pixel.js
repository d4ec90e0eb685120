/* Sluice tracking script. This is the readable source; the API serves it minified
   (app/pixel/script.py). README's "Pixel tracking" section documents every attribute and call.

   Embed: <script defer src="https://YOUR-SLUICE-HOST/pixel.js"></script>
   Calls made before the script loads are kept if the page defines:
     window.sluice = window.sluice || function () { (window.sluice.q = window.sluice.q || []).push(arguments); };
   then: sluice('event', 'signup', {plan: 'pro'}), sluice('pageview'), sluice('404'),
   sluice('consent', false | true). */
(function (w, d) {
  "use strict";
  var me = d.currentScript, loc = w.location, nav = w.navigator;
  var IDLE = 3e4; // engaged time stops 30 s after the last input
  var GAP = 18e5; // engaged again after 30 min without: a new visit, so a new pageview first
  var noop = function () {};

  function data(name) {
    return me ? me.getAttribute("data-" + name) : null;
  }
  function flag(name) {
    return data(name) !== null;
  }
  // A listener that can never throw into the page.
  function safe(fn) {
    return function (e) {
      try {
        fn(e);
      } catch (x) {
        /* the page must not notice */
      }
    };
  }
  // Captured: seen before the page's own handlers can stop them (and scrolls of inner boxes too).
  function on(target, type, fn) {
    target.addEventListener(type, safe(fn), { capture: true, passive: true });
  }

  var trackUrl, configUrl, pending = (w.sluice && w.sluice.q) || [];
  try {
    var endpoint = data("endpoint");
    if (endpoint) {
      endpoint = new URL(endpoint, loc.href).href.replace(/\/+$/, "");
      trackUrl = endpoint + "/e";
      configUrl = endpoint + "/c";
    } else {
      var base = (data("api") || new URL(me.src).origin).replace(/\/+$/, "") + "/api/v1/pixel";
      trackUrl = base + "/track";
      configUrl = base + "/config";
    }
  } catch (x) {
    w.sluice = noop; // no script tag to read (an inline copy) or a malformed attribute: stay quiet
    return;
  }

  // Pages nobody wants counted: local development, automated browsers, and visitors who asked not
  // to be tracked when the site says it respects that.
  var local = /^localhost$|\.localhost$|^127(\.\d+){3}$|^\[::1\]$/.test(loc.hostname) || loc.protocol === "file:";
  var refused = flag("respect-dnt") &&
    (nav.doNotTrack === "1" || w.doNotTrack === "1" || nav.globalPrivacyControl === true);
  if (refused || (!flag("allow-local") && (local || nav.webdriver))) {
    w.sluice = noop;
    return;
  }

  var hashRouting = flag("hash-routing");
  var auto = " " + (data("auto") || "") + " ";
  var extensions = (data("download-extensions") ||
    "pdf,xlsx,docx,txt,rtf,csv,exe,key,pps,ppt,pptx,7z,pkg,rar,gz,zip,avi,mov,mp4,mpeg,wmv,midi,mp3,wav,wma,dmg,iso,msi")
    .toLowerCase().split(/[\s,]+/);
  var queue = [], config = null, timer = 0, consent = true;
  // One draw per page load: the server applies sample_rate to the same number, so an event the
  // script keeps is never sampled out again on arrival.
  var sampleKey = Math.random();

  // -- delivery ---------------------------------------------------------------------------------
  function allowed(name) {
    if (!config) return true; // leaving before the config came: the server applies it
    if (!config.enabled || !(sampleKey < config.sample_rate)) return false;
    var f = config.features || {};
    return name === "pageview" || name === "engagement" ? f.pageviews !== false : f.events !== false;
  }

  function send(batch) {
    var body = JSON.stringify(batch.length > 1 ? batch : batch[0]);
    // text/plain: a CORS-safelisted type, so neither sendBeacon nor fetch needs a preflight.
    try {
      if (nav.sendBeacon && nav.sendBeacon(trackUrl, new Blob([body], { type: "text/plain" }))) return;
    } catch (x) {
      /* refused by the page's policy: try fetch */
    }
    try {
      fetch(trackUrl, { method: "POST", body: body, keepalive: true, credentials: "omit",
        headers: { "Content-Type": "text/plain" } }).catch(noop);
    } catch (x) {
      /* nothing left to try */
    }
  }

  // Sends what is queued (taken off the queue first: nothing goes twice). Before the config
  // answered, only a page being left or an immediate event forces it.
  function flush(force) {
    clearTimeout(timer);
    timer = 0;
    if (!config && !force) return;
    var batch = queue.filter(function (e) { return allowed(e.event); });
    queue = [];
    for (var i = 0; i < batch.length; i += 50) send(batch.slice(i, i + 50));
  }

  function push(name, props, url, time) {
    if (!consent) return false;
    queue.push({ event: name, url: url || loc.href, referrer: d.referrer || "", properties: props || {},
      timestamp: Math.round(time || Date.now()), sample_key: sampleKey });
    if (config && !timer) timer = setTimeout(flush, 1000); // a short window batches a burst
    return true;
  }

  // -- pageviews and engagement ---------------------------------------------------------------
  var page = null; // the current pageview: {id, url, start, engaged, sentMs, depth, sentDepth, last, lost}
  var activeSince = 0, lastInput = Date.now(), focused = d.hasFocus();

  function visible() {
    return d.visibilityState !== "hidden";
  }

  function depth() {
    var el = d.documentElement, h = Math.max(el.scrollHeight, d.body ? d.body.scrollHeight : 0);
    return h ? Math.min(100, Math.round((100 * (w.scrollY + w.innerHeight)) / h)) : 100;
  }

  // Adds the engaged stretch up to now (or to the moment input stopped) to the page; returns now.
  function settle() {
    var now = Date.now();
    if (activeSince && page) {
      var end = Math.min(now, lastInput + IDLE);
      if (end > activeSince) {
        page.engaged += end - activeSince;
        page.last = end;
      }
      activeSince = end < now ? 0 : now;
    }
    return now;
  }

  function engagement() {
    if (!page) return;
    var now = settle(), ms = Math.round(page.engaged - page.sentMs);
    if (ms <= 0 && page.depth === page.sentDepth) return;
    page.sentMs += ms;
    page.sentDepth = page.depth;
    push("engagement", { pageview_id: page.id, engaged_ms: ms, scroll_depth: page.depth }, page.url, page.last || now);
  }

  function id() {
    for (var s = ""; s.length < 16; ) s += ((Math.random() * 16) | 0).toString(16);
    return s;
  }

  function key(url) {
    return hashRouting ? url : url.split("#")[0];
  }

  function pageview(again) {
    var url = loc.href;
    if (!again && page && key(url) === key(page.url)) return;
    engagement(); // the previous page's, before the next begins
    var now = Date.now(), at = depth();
    page = { id: id(), url: url, start: now, engaged: 0, sentMs: 0, depth: at, sentDepth: at, last: 0 };
    lastInput = now;
    activeSince = visible() && focused ? now : 0;
    page.lost = !push("pageview", { title: d.title, pageview_id: page.id });
  }

  function activity() {
    if (!visible() || !focused) return;
    var now = settle();
    if (!activeSince) {
      if (page && now - (page.last || page.start) >= GAP) pageview(true);
      activeSince = now;
    }
    lastInput = now;
  }

  function leave() {
    settle();
    activeSince = 0;
    engagement();
    flush(true);
  }

  // -- automatic events -----------------------------------------------------------------------
  function immediately(name, props) {
    if (push(name, props)) flush(true); // the click or submit may be taking the page away
  }

  function click(e) {
    if (e.type === "auxclick" && e.button !== 1) return;
    var a = e.target && e.target.closest && e.target.closest("a[href]");
    if (!a || !/^https?:$/.test(a.protocol)) return;
    var name = a.pathname.split("/").pop(), dot = name.lastIndexOf(".");
    if (auto.indexOf(" download ") >= 0 &&
        (a.hasAttribute("download") || (dot > 0 && extensions.indexOf(name.slice(dot + 1).toLowerCase()) >= 0))) {
      immediately("file_download", { url: a.href });
    } else if (auto.indexOf(" outbound ") >= 0 && a.host !== loc.host) {
      immediately("outbound_link", { url: a.href });
    }
  }

  function submit(e) {
    var f = e.target;
    if (auto.indexOf(" form ") < 0 || !f || !f.getAttribute) return;
    // The form's own id and name attributes, never what was typed into it.
    immediately("form_submit", { form_id: f.getAttribute("id") || "", form_name: f.getAttribute("name") || "" });
  }

  // -- the page's calls -------------------------------------------------------------------------
  function setConsent(value) {
    var was = consent;
    consent = value !== false;
    if (!consent) {
      queue = [];
      clearTimeout(timer);
      timer = 0;
    } else if (!was && page && page.lost) {
      page = null; // the landing pageview was refused while consent was off: count it now
      pageview();
    }
  }

  function call(kind, name, props) {
    if (kind === "event" && name) push(String(name), props && typeof props === "object" ? props : {});
    else if (kind === "pageview") pageview();
    else if (kind === "404") push("404");
    else if (kind === "consent") setConsent(name);
  }

  var api = function () {
    try {
      call.apply(null, arguments);
    } catch (x) {
      /* a bad call must not break the page */
    }
  };

  // -- start ------------------------------------------------------------------------------------
  try {
    w.sluice = api;
    var calls = [];
    for (var i = 0; i < pending.length; i++) {
      if (pending[i][0] === "consent") setConsent(pending[i][1]);
      else calls.push(pending[i]);
    }
    pageview();
    if (flag("404")) push("404");
    for (i = 0; i < calls.length; i++) api.apply(null, calls[i]);

    ["pushState", "replaceState"].forEach(function (method) {
      var original = history[method];
      history[method] = function () {
        var result = original.apply(this, arguments);
        setTimeout(safe(pageview), 0); // after the router has updated the page (and its title)
        return result;
      };
    });
    on(w, "popstate", function () { setTimeout(safe(pageview), 0); });
    if (hashRouting) on(w, "hashchange", function () { pageview(); });
    on(w, "pageshow", function (e) { if (e.persisted) pageview(true); }); // back from the bfcache
    on(w, "pagehide", leave);
    on(d, "visibilitychange", function () { if (visible()) activity(); else leave(); });
    // The window's own focus and blur only (captured, an input's blur passes here too).
    on(w, "focus", function (e) { if (e.target === w) { focused = true; activity(); } });
    on(w, "blur", function (e) { if (e.target === w) { settle(); activeSince = 0; focused = false; } });
    on(w, "scroll", function () { page.depth = Math.max(page.depth, depth()); activity(); });
    ["keydown", "mousedown", "mousemove", "touchstart", "wheel"].forEach(function (type) {
      on(d, type, activity);
    });
    on(d, "click", click);
    on(d, "auxclick", click);
    on(d, "submit", submit);

    fetch(configUrl, { credentials: "omit" })
      .then(function (r) { return r.ok ? r.json() : { enabled: false }; })
      .then(function (c) { config = c || { enabled: false }; flush(); })
      .catch(function () { config = { enabled: false }; queue = []; });
  } catch (x) {
    /* an old browser without fetch or URL: nothing is tracked, nothing breaks */
  }
})(window, document);
