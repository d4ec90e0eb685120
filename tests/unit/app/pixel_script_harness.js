// Runs app/pixel/pixel.js in a simulated page (node's vm) and prints what it sent, as JSON.
// argv: <pixel.js path> <config JSON the API answers> <the value Math.random() returns>
const fs = require("fs");
const vm = require("vm");
const [, , scriptPath, configJson, random] = process.argv;

const sent = [];
const listeners = {};
const timers = [];
const location = { href: "https://shop.example/a?utm_source=news" };
const document = {
  currentScript: { src: "https://api.sluice.test/pixel.js", getAttribute: () => null },
  referrer: "https://www.google.com/", title: "Shop", visibilityState: "visible",
  addEventListener: (type, f) => { listeners["document:" + type] = f; },
};
const window = { addEventListener: (type, f) => { listeners["window:" + type] = f; } };
// The page's stub, as in the README snippet: calls before the script loads are queued.
window.sluice = function () { (window.sluice.q = window.sluice.q || []).push(arguments); };
window.sluice("event", "early", { a: 1 });

class Blob { constructor(parts, options) { this.text = parts.join(""); this.type = options.type; } }
const context = vm.createContext({
  window, document, location, URL, JSON, Date, String, Promise,
  history: { pushState(state, title, url) { location.href = url; } },
  navigator: { sendBeacon(url, blob) { sent.push({ url, type: blob.type, body: JSON.parse(blob.text) }); return true; } },
  Blob,
  fetch(url, options) {
    if (url.endsWith("/config")) {
      return Promise.resolve({ ok: true, json: () => Promise.resolve(JSON.parse(configJson)) });
    }
    sent.push({ url, body: JSON.parse(options.body), fetch: true });
    return Promise.resolve({ ok: true });
  },
  Math: Object.assign(Object.create(Math), { random: () => Number(random) }),
  setTimeout(f) { timers.push(f); return timers.length; },
  clearTimeout() {},
});
vm.runInContext(fs.readFileSync(scriptPath, "utf8"), context);

setTimeout(() => {  // node's own: the config promise has settled
  window.sluice("event", "signup", { plan: "pro" });
  context.history.pushState({}, "", "https://shop.example/b");
  timers.splice(0).forEach((f) => f());  // the 1 s flush, then the SPA pageview
  listeners["window:pagehide"]();
  console.log(JSON.stringify(sent));
}, 20);
