/* Kommunal-Pulse feedback widget (EUPL-1.2): 1-5 stars and an optional comment, German or English by `lang`.
   <script src="https://INGEST/feedback.js" data-token="kps_..." data-service="LeiKa key (optional)" async></script>
   Sends only when the button is pressed; no cookies, no storage. Style it through the class names kp-feedback*. */
(function (d) {
  var s = d.currentScript;
  if (!s) return;
  var en = /^en/i.test(s.getAttribute("data-lang") || d.documentElement.lang || "de"),
    T = en ? {
      legend: "How satisfied are you with this online service?", stars: ["1 star: very dissatisfied", "2 stars",
        "3 stars", "4 stars", "5 stars: very satisfied"], comment: "Comment (optional)",
      hint: "Please do not enter personal data such as names, addresses or phone numbers.",
      send: "Send rating", pick: "Please choose a rating from 1 to 5 stars.", thanks: "Thank you for your rating!",
      failed: "Sorry, the rating could not be sent. Please try again later."
    } : {
      legend: "Wie zufrieden sind Sie mit diesem Online-Angebot?", stars: ["1 Stern: sehr unzufrieden", "2 Sterne",
        "3 Sterne", "4 Sterne", "5 Sterne: sehr zufrieden"], comment: "Kommentar (optional)",
      hint: "Bitte geben Sie keine persönlichen Daten wie Namen, Adressen oder Telefonnummern ein.",
      send: "Bewertung senden", pick: "Bitte wählen Sie eine Bewertung von 1 bis 5 Sternen.",
      thanks: "Vielen Dank für Ihre Bewertung!", failed: "Die Bewertung konnte leider nicht gesendet werden. Bitte versuchen Sie es später erneut."
    },
    uid = "kp-fb-" + Array.from(crypto.getRandomValues(new Uint8Array(6)), function (b) { return (b + 256).toString(16).slice(1); }).join(""),
    url = new URL(s.src).origin + "/v1/collect";
  function el(tag, attrs, text) {
    var e = d.createElement(tag), k;
    for (k in attrs) e.setAttribute(k, attrs[k]);
    if (text) e.textContent = text;
    return e;
  }
  var form = el("form", { "class": "kp-feedback", lang: en ? "en" : "de", novalidate: "" }),
    set = el("fieldset", { "class": "kp-feedback-stars" }), i, row, input, label, star;
  set.appendChild(el("legend", {}, T.legend));
  for (i = 1; i <= 5; i++) {
    row = el("span", { "class": "kp-feedback-star" });
    input = el("input", { type: "radio", name: uid + "-stars", id: uid + "-" + i, value: String(i) });
    label = el("label", { "for": uid + "-" + i });
    star = el("span", { "aria-hidden": "true" }, "★".repeat(i) + " ");
    label.appendChild(star);
    label.appendChild(d.createTextNode(T.stars[i - 1]));
    row.appendChild(input); row.appendChild(label); set.appendChild(row);
  }
  form.appendChild(set);
  form.appendChild(el("label", { "for": uid + "-comment" }, T.comment));
  form.appendChild(el("p", { id: uid + "-hint", "class": "kp-feedback-hint" }, T.hint));
  var area = el("textarea", { id: uid + "-comment", name: "comment", maxlength: "500", rows: "3",
    "aria-describedby": uid + "-hint" });
  form.appendChild(area);
  var button = el("button", { type: "submit" }, T.send), status = el("p", { role: "status", "class": "kp-feedback-status" });
  form.appendChild(button);
  form.appendChild(status);
  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var chosen = form.querySelector("input:checked");
    if (!chosen) { status.textContent = T.pick; form.querySelector("input").focus(); return; }
    var hit = { kind: "feedback", stars: +chosen.value, session: uid.slice(6) + "fb" },
      service = s.getAttribute("data-service");
    if (area.value.trim()) hit.comment = area.value.trim();
    if (service) hit.service = service;
    button.disabled = true;
    fetch(url, { method: "POST", body: JSON.stringify({ token: s.getAttribute("data-token"), hits: [hit] }),
      keepalive: true, credentials: "omit", headers: { "Content-Type": "text/plain" } })
      .then(function (r) {
        if (!r.ok) throw r;
        set.disabled = true; area.disabled = true; status.textContent = T.thanks;
      })
      .catch(function () { button.disabled = false; status.textContent = T.failed; });
  });
  var target = s.getAttribute("data-target") && d.getElementById(s.getAttribute("data-target"));
  if (target) target.appendChild(form); else s.parentNode.insertBefore(form, s.nextSibling);
})(document);
