/* Draws each chart of the page from its data island (the numbers the table next to it shows). */
(function () {
  "use strict";
  if (typeof Chart === "undefined") { return; }
  // Colours with at least 3:1 contrast against white (WCAG 1.4.11), distinguishable for common colour-vision deficiencies.
  var COLOURS = ["#0b3a6e", "#b34700", "#1b6e3a", "#7b2d8e", "#8a6d00", "#5a5a5a"];
  var DASHES = [[], [6, 4], [2, 3], [10, 3, 2, 3]];
  var nf = new Intl.NumberFormat("de-DE", { maximumFractionDigits: 2 });
  var pf = new Intl.NumberFormat("de-DE", { style: "percent", minimumFractionDigits: 1, maximumFractionDigits: 1 });

  function format(unit, v) {
    if (v === null || v === undefined) { return "–"; }
    if (unit === "percent") { return pf.format(v); }
    if (unit === "seconds") { return nf.format(v / 60) + " min"; }
    return nf.format(v);
  }

  function draw(figure) {
    var id = figure.getAttribute("data-chart");
    var island = document.getElementById(id + "-data");
    var canvas = document.getElementById(id + "-canvas");
    if (!island || !canvas) { return; }
    var spec = JSON.parse(island.textContent);
    var valueAxis = spec.horizontal ? "x" : "y";
    var catAxis = spec.horizontal ? "y" : "x";
    var scales = {};
    scales[valueAxis] = {
      beginAtZero: true, stacked: spec.stacked,
      ticks: { color: "#1a1a1a", callback: function (v) { return format(spec.unit, v); } },
      grid: { color: "#d0d0d0" }
    };
    scales[catAxis] = { stacked: spec.stacked, ticks: { color: "#1a1a1a" }, grid: { display: false } };
    new Chart(canvas, {
      type: spec.type,
      data: {
        labels: spec.labels,
        datasets: spec.datasets.map(function (ds, i) {
          var c = COLOURS[i % COLOURS.length];
          return {
            label: ds.label, data: ds.data, backgroundColor: c, borderColor: c,
            borderWidth: spec.type === "line" ? 2 : 0, borderDash: spec.type === "line" ? DASHES[i % DASHES.length] : [],
            pointRadius: spec.type === "line" ? 3 : 0, pointStyle: ["circle", "rect", "triangle", "rectRot"][i % 4],
            spanGaps: false
          };
        })
      },
      options: {
        indexAxis: spec.horizontal ? "y" : "x",
        responsive: true, maintainAspectRatio: false, animation: false,
        scales: scales,
        plugins: {
          legend: { labels: { color: "#1a1a1a", usePointStyle: true } },
          tooltip: {
            callbacks: {
              label: function (item) { return item.dataset.label + ": " + format(spec.unit, item.raw); }
            }
          }
        }
      }
    });
    figure.setAttribute("data-rendered", "true");
  }

  document.querySelectorAll("figure[data-chart]").forEach(draw);
}());
