// Live job charts: one EventSource per job (see webapp/jobs/streams.py), uPlot charts per metric.
// Single job: reward components share one chart. Comparison: one series per job in each chart.
(function () {
  "use strict";
  const root = document.getElementById("job-dashboard");
  if (!root) return;
  const jobs = JSON.parse(document.getElementById("dashboard-jobs").textContent);  // [{id, label, events}]
  const compare = jobs.length > 1;
  const colors = ["#3556d8", "#d8572a", "#1a7f37", "#9a6700", "#8250df", "#cf222e", "#0a7ea4", "#57606a"];
  const charts = {};                                  // chartKey -> {series: Map(key -> Map(step -> value)), plot, el}
  let dirty = new Set();

  function chartKeyFor(name) {
    if (compare) return name;
    return name.startsWith("rewards/") ? "reward components" : name;
  }

  function chartFor(key) {
    if (!charts[key]) {
      const el = document.createElement("div");
      el.className = "chart card";
      el.dataset.metric = key;
      el.innerHTML = "<h3></h3><div class='plot'></div><p class='muted last'></p>";
      el.querySelector("h3").textContent = key;
      const container = document.getElementById("charts");
      // keep charts in a stable, alphabetical order
      const after = Array.from(container.children).find((c) => c.dataset.metric > key);
      container.insertBefore(el, after || null);
      charts[key] = { series: new Map(), plot: null, el: el, seriesCount: 0 };
    }
    return charts[key];
  }

  function addPoints(job, points) {
    for (const p of points) {
      const chart = chartFor(chartKeyFor(p.name));
      const seriesKey = compare ? job.label : p.name;
      if (!chart.series.has(seriesKey)) chart.series.set(seriesKey, new Map());
      chart.series.get(seriesKey).set(p.step, p.value);
      chart.lastPoint = { name: p.name, step: p.step, value: p.value, label: job.label };
      dirty.add(chart);
    }
  }

  // Tick and legend text in plain ASCII, whatever the browser's locale: uPlot's own formatter is
  // Intl.NumberFormat(navigator.language), which writes U+2212 "−" and decimal commas in many locales
  // (sv, fi, nb, ...), and a canvas font without that glyph drops the sign: -1.5 reads as 1.5.
  // Decimals follow the tick increment (uPlot picks 1, 2, 2.5, 5 x 10^k), so 0.25 steps keep 2.
  function formatTick(value, increment) {
    if (value === null || value === undefined || !Number.isFinite(value)) return "";
    const step = Number(Math.abs(increment || 0).toPrecision(12)).toString();
    let text;
    if (value !== 0 && (Math.abs(value) >= 1e7 || Math.abs(value) < 1e-6 || step.includes("e"))) {
      text = value.toPrecision(3);
    } else {
      text = value.toFixed(step.includes(".") ? Math.min(12, step.split(".")[1].length) : 0);
    }
    return Number(text) === 0 ? text.replace(/^-/, "") : text;  // no "-0.0" for a tick at zero
  }

  function formatValue(value) {
    return value === null || value === undefined ? "--" : String(Number(Number(value).toPrecision(5)));
  }

  const asciiTicks = (u, splits, axisIdx, space, increment) => splits.map((v) => formatTick(v, increment));
  window.jobDashboard = { charts: charts, formatTick: formatTick };  // for the browser tests and devtools

  function render(chart) {
    const keys = Array.from(chart.series.keys());
    const steps = Array.from(new Set(keys.flatMap((k) => Array.from(chart.series.get(k).keys())))).sort((a, b) => a - b);
    const data = [steps, ...keys.map((k) => steps.map((s) => (chart.series.get(k).has(s) ? chart.series.get(k).get(s) : null)))];
    if (!chart.plot || chart.seriesCount !== keys.length) {
      if (chart.plot) chart.plot.destroy();
      const width = Math.max(280, chart.el.clientWidth - 44);  // the card's padding
      chart.plot = new uPlot({
        width: width, height: 200, scales: { x: { time: false } },
        axes: [{ values: asciiTicks }, { values: asciiTicks }],
        series: [{ label: "step", value: (u, v) => (v === null || v === undefined ? "--" : String(v)) },
          ...keys.map((k, i) => ({ label: k, stroke: colors[i % colors.length], width: 2, spanGaps: true, points: { size: 4 },
            value: (u, v) => formatValue(v) }))],
        legend: { show: keys.length > 1 || compare },
      }, data, chart.el.querySelector(".plot"));
      chart.seriesCount = keys.length;
    } else {
      chart.plot.setData(data);
    }
    const last = chart.lastPoint;
    chart.el.querySelector(".last").textContent =
      `${compare ? last.label + " · " : ""}${last.name} = ${last.value === null ? "NaN" : Number(last.value).toPrecision(5)} at step ${last.step}`;
  }

  function flush() {
    for (const chart of dirty) render(chart);
    dirty = new Set();
    root.dataset.pointsSeen = String(Object.values(charts).reduce((n, c) => n + Array.from(c.series.values()).reduce((m, s) => m + s.size, 0), 0));
    window.requestAnimationFrame(flush);
  }
  window.requestAnimationFrame(flush);

  for (const job of jobs) {
    const source = new EventSource(job.events);
    source.addEventListener("metrics", (e) => addPoints(job, JSON.parse(e.data)));
    source.addEventListener("status", () => { if (!compare && window.htmx) htmx.trigger("#job-status", "refresh"); });
    source.addEventListener("samples", () => { if (!compare && window.htmx) htmx.trigger("#job-samples", "refresh"); });
    source.addEventListener("done", () => {
      source.close();  // otherwise EventSource reconnects forever
      if (!compare && window.htmx) { htmx.trigger("#job-status", "refresh"); htmx.trigger("#job-samples", "refresh"); }
    });
  }
})();
