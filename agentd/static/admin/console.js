/* The console's charts: uPlot line charts drawn from the page's JSON data block.
   No inline script anywhere, so the pages work under `script-src 'self'`. */
(function () {
  "use strict";
  var COLORS = ["#3157d5", "#e67e22", "#27ae60", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d", "#d35400"];

  function seconds(day) { return Date.parse(day + "T00:00:00Z") / 1000; }

  function draw(el, source, measure) {
    var days = source.days || [];
    if (!days.length) {
      el.innerHTML = '<p class="empty">No usage in this period.</p>';
      el.setAttribute("data-drawn", "empty");
      return;
    }
    var data = [days.map(seconds)];
    var series = [{}];
    source.series.forEach(function (s, i) {
      data.push(s[measure]);
      series.push({ label: s.name, stroke: COLORS[i % COLORS.length], width: 2,
                    points: { show: true, size: 6 }, spanGaps: false });
    });
    var width = Math.max(el.clientWidth, 280);
    var money = measure === "cost_usd";
    var format = function (u, values) {
      return values.map(function (v) { return money ? "$" + Number(v.toPrecision(3)) : String(v); });
    };
    new uPlot({ width: width, height: 220, series: series,
                axes: [{}, { size: money ? 84 : 60, values: format }],
                scales: { x: { time: true, range: function (u, min, max) { return [min - 43200, max + 43200]; } },
                          y: { range: function (u, min, max) { return [0, max > 0 ? max * 1.1 : 1]; } } } },
              data, el);
    el.setAttribute("data-drawn", "true");
  }

  function start() {
    var block = document.getElementById("usage-data");
    if (!block || typeof uPlot === "undefined") return;
    var usage = JSON.parse(block.textContent);
    document.querySelectorAll(".chart[data-source]").forEach(function (el) {
      draw(el, usage[el.getAttribute("data-source")], el.getAttribute("data-measure"));
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
