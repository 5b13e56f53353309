/* Open Smart City app: favourites on this device only (localStorage), KPIs and newest datasets of a city. */
(function () {
  "use strict";
  if ("serviceWorker" in navigator) navigator.serviceWorker.register("/sw.js");
  var KEY = "kp-favoriten";
  function favourites() {
    try { return JSON.parse(localStorage.getItem(KEY) || "[]"); } catch (e) { return []; }
  }
  function el(tag, text, attrs) {
    var e = document.createElement(tag), k;
    if (text) e.textContent = text;
    for (k in attrs || {}) e.setAttribute(k, attrs[k]);
    return e;
  }
  var list = document.getElementById("favoriten");
  if (list) {
    var favs = favourites();
    if (!favs.length) list.appendChild(el("li", "Noch keine Favoriten."));
    favs.forEach(function (f) {
      var li = el("li");
      li.appendChild(el("a", f.name, { href: "/app/" + f.ags }));
      list.appendChild(li);
    });
  }
  var main = document.querySelector("main[data-ags]");
  if (!main) return;
  var ags = main.getAttribute("data-ags"), name = main.getAttribute("data-name");
  var button = document.getElementById("favorit"), status = document.getElementById("favorit-status");
  function isFav() { return favourites().some(function (f) { return f.ags === ags; }); }
  function show() {
    button.setAttribute("aria-pressed", String(isFav()));
    button.textContent = isFav() ? "Favorit entfernen" : "Als Favorit merken";
  }
  button.addEventListener("click", function () {
    var favs = favourites().filter(function (f) { return f.ags !== ags; });
    var adding = favs.length === favourites().length;
    if (adding) favs.push({ ags: ags, name: name });
    localStorage.setItem(KEY, JSON.stringify(favs));
    status.textContent = adding ? name + " ist jetzt ein Favorit." : name + " ist kein Favorit mehr.";
    show();
  });
  show();
  var to = new Date(), from = new Date(to.getTime() - 29 * 86400000);
  function day(d) { return d.toISOString().slice(0, 10); }
  var labels = { sessions_started: "Gestartete Vorgänge", sessions_submitted: "Abschlüsse",
    page_views: "Seitenaufrufe", feedback_count: "Bewertungen" };
  fetch("/v1/kpis/totals.json?municipality=" + ags + "&period=day&from=" + day(from) + "&to=" + day(to) +
        "&limit=1000")
    .then(function (r) { return r.json(); })
    .then(function (body) {
      var sums = {}, dl = document.getElementById("kennzahlen");
      (body.items || []).forEach(function (i) {
        if (labels[i.metric] && typeof i.value === "number")
          sums[i.metric] = (sums[i.metric] || 0) + i.value;
      });
      dl.textContent = "";
      Object.keys(labels).forEach(function (m) {
        dl.appendChild(el("dt", labels[m]));
        dl.appendChild(el("dd", m in sums ? sums[m].toLocaleString("de-DE") : "keine veröffentlichten Werte"));
      });
    })
    .catch(function () { document.getElementById("kennzahlen").textContent = "Offline: keine Kennzahlen gespeichert."; });
  fetch("/api/3/action/package_search?fq=organization:" + main.getAttribute("data-org") +
        "&sort=metadata_modified%20desc&rows=5")
    .then(function (r) { return r.json(); })
    .then(function (body) {
      var ul = document.getElementById("datensaetze");
      ul.textContent = "";
      var found = (body.result && body.result.results) || [];
      if (!found.length) ul.appendChild(el("li", "Noch keine Datensätze."));
      found.forEach(function (d) {
        var li = el("li");
        li.appendChild(el("a", d.title, { href: "/portal/datensaetze/" + d.name }));
        ul.appendChild(li);
      });
    })
    .catch(function () { document.getElementById("datensaetze").textContent = "Offline: keine Datensätze gespeichert."; });
})();
