/* Kommunal-Pulse web tracker (EUPL-1.2). Cookieless: no cookies, no storage, no fingerprint; DNT and GPC stop it.
   <script src="https://INGEST/tracker.js" data-token="kps_..." data-query="lang,typ" defer></script> */
(function (w, d, n) {
  var s = d.currentScript;
  if (!s || n.doNotTrack == "1" || w.doNotTrack == "1" || n.globalPrivacyControl) return;
  var token = s.getAttribute("data-token"), url = new URL(s.src).origin + "/v1/collect",
    allow = (s.getAttribute("data-query") || "").split(",").filter(Boolean),
    id = Array.from(crypto.getRandomValues(new Uint8Array(9)), function (b) { return (b + 256).toString(16).slice(1); }).join(""),
    files = /\.(pdf|docx?|xlsx?|pptx?|od[tsp]|csv|zip|rtf|txt|xml|json|geojson|gpx|kml|jpe?g|png|mp[34])$/i,
    forms = new Map(), last;
  function send(hit) {
    hit.session = id; hit.width = w.innerWidth;
    var body = JSON.stringify({ token: token, hits: [hit] });
    if (!(n.sendBeacon && n.sendBeacon(url, body)))
      fetch(url, { method: "POST", body: body, keepalive: true, credentials: "omit", headers: { "Content-Type": "text/plain" } }).catch(function () {});
  }
  function path() {
    var p = location.pathname, q = new URLSearchParams(location.search);
    allow.forEach(function (k) { if (q.has(k)) p += ";" + k + "=" + encodeURIComponent(q.get(k)); });
    return p;
  }
  function view(ref) {
    var p = path();
    if (p != last) { last = p; send({ kind: "pageview", path: p, ref: ref }); }
  }
  var push = history.pushState;
  history.pushState = function () { push.apply(this, arguments); view(location.hostname); };
  w.addEventListener("popstate", function () { view(location.hostname); });
  d.addEventListener("click", function (e) {
    var a = e.target.closest && e.target.closest("a[href]"), f, b, x;
    if (a) {
      x = new URL(a.href, location.href);
      if (/^https?:$/.test(x.protocol)) {
        if (a.hasAttribute("download") || files.test(x.pathname)) send({ kind: "download", path: x.pathname });
        else if (x.hostname != location.hostname) send({ kind: "outbound", host: x.hostname });
      }
    }
    f = form(e.target); b = e.target.closest && e.target.closest("[data-kp-step]");
    if (f && f.start && b) {
      f.step = +b.getAttribute("data-kp-step");
      f.send({ kind: "form_step", step: f.step, name: b.getAttribute("data-kp-step-name") || "schritt-" + f.step });
    }
  }, true);
  function form(t) {
    var el = t.closest && t.closest("form[data-kp-form]"), f;
    if (!el) return;
    f = forms.get(el);
    if (!f) {
      f = { start: 0, step: 0, send: function (h) { h.service = el.getAttribute("data-kp-service") || undefined; send(h); } };
      forms.set(el, f);
    }
    return f;
  }
  d.addEventListener("focusin", function (e) {
    var f = form(e.target);
    if (f && !f.start) { f.start = Date.now(); f.send({ kind: "form_start" }); }
  });
  d.addEventListener("submit", function (e) {
    var f = form(e.target);
    if (f && f.start > 0) { f.send({ kind: "form_submit", duration: Math.round((Date.now() - f.start) / 1000) }); f.start = -1; }
  });
  w.addEventListener("pagehide", function () {
    forms.forEach(function (f) { if (f.start > 0) { f.send({ kind: "form_abandon", step: f.step }); f.start = -1; } });
  });
  var r = "";
  try { r = d.referrer ? new URL(d.referrer).hostname : ""; } catch (e) {}
  view(r);
})(window, document, navigator);
