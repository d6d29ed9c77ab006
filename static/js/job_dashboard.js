// Live job charts: one EventSource per job (see webapp/jobs/streams.py), uPlot panels grouped the way TRL
// names its metrics (PANEL_GROUPS, the one definition of the layout). A job page draws one run; the compare
// page draws up to ten on the same panels, each run in its colour (webapp/jobs/selectors.py run_colours).
// No inline script and no eval anywhere: the page's Content-Security-Policy forbids both.
(function () {
  "use strict";
  const root = document.getElementById("job-dashboard");
  if (!root) return;
  const jobs = JSON.parse(document.getElementById("dashboard-jobs").textContent);  // [{id, label, kind, colour, events}]
  const compare = jobs.length > 1;
  const kind = jobs[0].kind;
  const metricColours = ["#3556d8", "#d8572a", "#1a7f37", "#9a6700", "#8250df", "#cf222e", "#0a7ea4", "#57606a"];
  const dashes = [undefined, [6, 3], [2, 3], [10, 3, 2, 3], [1, 5]];

  // ---- The layout: groups in the order a run is judged by, each a list of panels. A metric goes to the first
  // panel that matches it (after a "member-N/" or "ensemble/" prefix of reward-model ensembles); `each: true`
  // gives every matching metric a panel of its own. `only`: the group is used for that job kind alone.
  const names = (...list) => (n) => list.includes(n);
  const PANEL_GROUPS = [
    { id: "rm", title: "Reward model: loss, accuracy, margin", only: "train_reward_model", panels: [
      { id: "loss", title: "Loss (train and held out)", match: names("loss", "eval_loss") },
      { id: "accuracy", title: "Preference accuracy (held out: with its 95 % Wilson interval)",
        match: names("accuracy", "eval_accuracy", "eval_accuracy_ci_low", "eval_accuracy_ci_high") },
      { id: "margin", title: "Margin: reward(chosen) - reward(rejected)", match: names("margin", "eval_margin") },
      { id: "rewards-given", title: "Rewards given (train batch)", match: names("mean_reward", "min_reward", "max_reward") },
    ] },
    { id: "rm-calibration", title: "Reward model: calibration", only: "train_reward_model", panels: [
      { id: "calibration", title: "Calibration on held-out pairs (Brier, ECE)", match: names("eval_brier", "eval_ece") },
    ] },
    { id: "rm-eval", title: "Reward model: held-out evaluation", only: "train_reward_model", panels: [
      { id: "eval", each: true, match: (n) => n.startsWith("eval_") && !/_(runtime|per_second)$/.test(n) },
    ] },
    { id: "reward", title: "Reward", panels: [
      { id: "reward", title: "Reward and each component (one axis)", match: (n) => n === "reward" || /^rewards\/.+\/mean$/.test(n) },
      { id: "reward-std", title: "Reward std (total and per component)", match: (n) => n === "reward_std" || /^rewards\/.+\/std$/.test(n) },
      { id: "frac-reward-zero-std", title: "Fraction of groups whose rewards all tie (no learning signal)", match: names("frac_reward_zero_std") },
    ] },
    { id: "policy", title: "KL and entropy", panels: [
      { id: "kl", title: "KL to the reference policy", match: names("kl") },
      { id: "entropy", title: "Entropy", match: names("entropy", "entropy_coef") },
    ] },
    { id: "lengths", title: "Completion lengths", panels: [
      { id: "length", title: "Completion length: mean, min, max (tokens)",
        match: names("completions/mean_length", "completions/min_length", "completions/max_length") },
      { id: "terminated-length", title: "Length of completions that ended (EOS): mean, min, max",
        match: names("completions/mean_terminated_length", "completions/min_terminated_length", "completions/max_terminated_length") },
      { id: "clipped-ratio", title: "Clipped (hit the length limit) and terminated ratios",
        match: (n) => n === "completions/clipped_ratio" || n === "completions/terminated_ratio" },
    ] },
    { id: "clipping", title: "Clip ratios", panels: [
      { id: "clip-ratio", title: "Clip ratios", match: (n) => n.startsWith("clip_ratio/") || n === "cispo_clip_ratio" },
      { id: "importance-sampling", title: "Importance sampling (vLLM vs trainer)", match: (n) => n.startsWith("sampling/") },
    ] },
    { id: "optimisation", title: "Loss, grad norm, learning rate", panels: [
      { id: "loss", title: "Loss", match: names("loss", "policy_loss", "aux_loss", "train_loss") },
      { id: "grad-norm", title: "Gradient norm", match: names("grad_norm") },
      { id: "learning-rate", title: "Learning rate", match: names("learning_rate") },
    ] },
    { id: "throughput", title: "Throughput and memory", panels: [
      { id: "throughput", each: true, match: (n) => n === "num_tokens" || n === "step_time" || n === "total_flos"
        || /_(runtime|per_second)$/.test(n) || /mem(ory)?([/_]|$)/.test(n) },
    ] },
    { id: "other", title: "Everything else", panels: [{ id: "other", each: true, match: () => true }] },
  ].filter((g) => !g.only || g.only === kind);

  const baseName = (name) => name.replace(/^(member-\d+|ensemble)\//, "");

  const places = new Map();  // metric name -> its panel, worked out once per name
  function panelFor(name) {  // -> {group, key, title}
    if (!places.has(name)) places.set(name, findPanel(name));
    return places.get(name);
  }
  function findPanel(name) {
    const base = baseName(name);
    for (const group of PANEL_GROUPS) {
      for (const panel of group.panels) {
        if (!panel.match(base)) continue;
        return panel.each ? { group, key: name, title: name, order: name } : { group, key: panel.id, title: panel.title, order: panel.id };
      }
    }
  }

  // ---- What the user chose, remembered per project (localStorage, this browser only).
  const layoutKey = "reward-studio:dashboard:" + (root.dataset.layoutKey || "default");
  const layout = Object.assign({ smoothing: 0, x: "step", folded: {}, log: {} }, readLayout());
  function readLayout() {
    try { return JSON.parse(window.localStorage.getItem(layoutKey) || "{}"); } catch (e) { return {}; }
  }
  function saveLayout() {
    try { window.localStorage.setItem(layoutKey, JSON.stringify(layout)); } catch (e) { /* storage off: not remembered */ }
  }

  // ---- Data: per job, the time of each step (its first point's); per panel, series (job, metric) in two
  // columns, `steps` ascending without repeats and `values` (null: NaN/inf logged). Columns, not a Map or an
  // object per point: 540,000 points of a ten-run compare page are adopted from the history response as
  // they are, and a panel whose runs share their steps hands them to uPlot without a merge.
  const stepTimes = new Map(jobs.map((job) => [job.id, new Map()]));
  const firstTime = new Map();
  const charts = {};  // panel key -> {series: Map(seriesKey -> {job, name, steps, values}), plot, el, group, ...}
  const groupEls = {};
  let dirty = new Set();
  let zoom = null;    // {min, max} on the x scale of every panel, or null

  function groupEl(group) {
    if (!groupEls[group.id]) {
      const el = document.createElement("details");
      el.className = "panel-group";
      el.dataset.group = group.id;
      el.open = !layout.folded[group.id];
      el.innerHTML = "<summary></summary><div class='grid2 panels'></div>";
      el.querySelector("summary").textContent = group.title;
      el.addEventListener("toggle", () => {
        // Setting `open` above fires this too, later: that one changes nothing and must not redraw the group.
        if (el.open === !layout.folded[group.id]) return;
        if (el.open) delete layout.folded[group.id]; else layout.folded[group.id] = true;
        saveLayout();
        if (el.open) for (const chart of Object.values(charts)) if (chart.group === group) dirty.add(chart);
      });
      const container = document.getElementById("charts");
      const order = PANEL_GROUPS.indexOf(group);
      const after = Array.from(container.children).find((c) => PANEL_GROUPS.findIndex((g) => g.id === c.dataset.group) > order);
      container.insertBefore(el, after || null);
      groupEls[group.id] = el;
    }
    return groupEls[group.id];
  }

  function chartFor(name) {
    const place = panelFor(name);
    if (!charts[place.key]) {
      const el = document.createElement("div");
      el.className = "chart card";
      el.dataset.metric = place.key;
      el.innerHTML = "<div class='chart-head'><h3></h3><span class='chart-actions'>"
        + "<label><input type='checkbox' class='log-y'> log y</label>"
        + "<button type='button' class='secondary png'>PNG</button><button type='button' class='secondary csv'>CSV</button>"
        + "</span></div><div class='plot'></div><p class='muted last'></p><p class='muted note'></p>";
      el.querySelector("h3").textContent = place.title;
      const chart = { key: place.key, title: place.title, group: place.group, series: new Map(), plot: null, el: el, shape: "" };
      const log = el.querySelector(".log-y");
      log.checked = Boolean(layout.log[place.key]);
      log.addEventListener("change", () => {
        if (log.checked) layout.log[place.key] = true; else delete layout.log[place.key];
        saveLayout();
        chart.shape = "";  // a new scale: build the plot again
        dirty.add(chart);
      });
      el.querySelector(".png").addEventListener("click", () => downloadPng(chart));
      el.querySelector(".csv").addEventListener("click", () => downloadCsv(chart));
      const panels = groupEl(place.group).querySelector(".panels");
      const siblings = PANEL_ORDER(place.group);
      const rank = (key) => { const i = siblings.indexOf(key); return i < 0 ? siblings.length : i; };
      const after = Array.from(panels.children).find((c) => rank(c.dataset.metric) > rank(place.key)
        || (rank(c.dataset.metric) === rank(place.key) && c.dataset.metric > place.key));
      panels.insertBefore(el, after || null);
      charts[place.key] = chart;
    }
    return charts[place.key];
  }
  const PANEL_ORDER = (group) => group.panels.filter((p) => !p.each).map((p) => p.id);

  function seriesFor(chart, job, name) {
    const key = job.id + "\u0000" + name;
    if (!chart.series.has(key)) chart.series.set(key, { job: job, name: name, steps: [], values: [] });
    return chart.series.get(key);
  }
  function putPoint(series, step, value) {  // a step seen again keeps its latest value, as a run's log does
    const steps = series.steps;
    let at = steps.length;
    if (at && steps[at - 1] >= step) {  // out of order (rare): find its place
      let lo = 0, hi = steps.length;
      while (lo < hi) { const mid = (lo + hi) >> 1; if (steps[mid] < step) lo = mid + 1; else hi = mid; }
      if (steps[lo] === step) { series.values[lo] = value; return; }
      at = lo;
    }
    if (at === steps.length) { steps.push(step); series.values.push(value); } else { steps.splice(at, 0, step); series.values.splice(at, 0, value); }
  }
  function putTime(job, step, time) {
    const times = stepTimes.get(job.id);
    if (time === undefined || time === null || times.has(step)) return;
    times.set(step, time);
    if (!firstTime.has(job.id) || time < firstTime.get(job.id)) firstTime.set(job.id, time);
  }
  function addPoints(job, points) {  // live points from the stream
    for (const p of points) {
      putTime(job, p.step, p.time);
      const chart = chartFor(p.name);
      putPoint(seriesFor(chart, job, p.name), p.step, p.value);
      chart.lastPoint = { name: p.name, step: p.step, value: p.value, label: job.label };
      dirty.add(chart);
    }
  }

  // ---- Number formatting in plain ASCII, whatever the browser's locale: uPlot's own formatter is
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
  const logTicks = (u, splits) => splits.map((v) => (v === null || v === undefined ? "" : formatValue(v)));
  const pad = (n) => String(n).padStart(2, "0");
  function formatTime(seconds) {
    const d = new Date(seconds * 1000);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  // Exponential moving average with TensorBoard's debiasing (the first values are not pulled to 0);
  // a missing value (NaN/inf logged, or no point at that x) stays missing and does not move the average.
  function ema(values, weight) {
    if (!weight) return values;
    let last = 0, n = 0;
    return values.map((v) => {
      if (v === null || v === undefined) return null;
      last = last * weight + (1 - weight) * v;
      n += 1;
      return last / (1 - Math.pow(weight, n));
    });
  }

  // x of one run's step on the chosen axis
  function xOf(jobId, step) {
    if (layout.x === "step") return step;
    const t = stepTimes.get(jobId).get(step);
    if (t === undefined) return null;
    return layout.x === "time" ? t : (t - firstTime.get(jobId)) / 60;
  }

  function seriesList(chart) {  // stable order: runs as given, then "reward" before its components, then by name
    const list = Array.from(chart.series.values());
    const jobIndex = new Map(jobs.map((j, i) => [j.id, i]));
    const rank = (s) => (baseName(s.name) === "reward" || baseName(s.name) === "loss" ? "" : s.name);
    return list.sort((a, b) => jobIndex.get(a.job.id) - jobIndex.get(b.job.id) || rank(a).localeCompare(rank(b)));
  }

  const sameSteps = (a, b) => a === b || (a.length === b.length && a.every((step, i) => step === b[i]));
  const forLog = (values) => values.map((v) => (v !== null && v <= 0 ? null : v));  // not drawn: counted in the note

  // uPlot's data: one x column and a value column per series. Every point is kept (uPlot itself draws
  // a min/max per pixel column), so the cursor and the CSV read exact values.
  function buildData(chart, list, logY) {
    if (layout.x === "step" && list.every((s) => sameSteps(s.steps, list[0].steps))) {  // runs logged the same steps
      return { x: list[0].steps.slice(), raw: list.map((s) => (logY ? forLog(s.values) : s.values.slice())) };
    }
    const xs = list.map((s) => s.steps.map((step) => xOf(s.job.id, step)));
    const x = Float64Array.from(new Set(xs.flat().filter((v) => v !== null))).sort();
    const index = new Map();
    x.forEach((v, i) => index.set(v, i));
    const raw = list.map((s, k) => {
      const column = new Array(x.length).fill(undefined);  // undefined: no point there (the line spans it)
      const values = logY ? forLog(s.values) : s.values;
      xs[k].forEach((px, i) => { if (px !== null) column[index.get(px)] = values[i]; });
      return column;
    });
    return { x: Array.from(x), raw };
  }
  function countWhere(values, test) {
    let n = 0;
    for (let i = 0; i < values.length; i++) if (test(values[i], i)) n += 1;
    return n;
  }

  function render(chart) {
    if (!groupEls[chart.group.id].open) return;  // drawn when unfolded
    const list = seriesList(chart);
    const logY = Boolean(layout.log[chart.key]);
    const smoothing = Number(layout.smoothing) || 0;
    const { x, raw } = buildData(chart, list, logY);
    const metricNames = Array.from(new Set(list.map((s) => s.name)));
    const data = [x];
    for (const column of raw) {
      if (!smoothing) { data.push(column); continue; }
      data.push(column.map((v) => (v === undefined ? null : v)));
      data.push(ema(data[data.length - 1], smoothing).map((v, i) => (column[i] === undefined ? undefined : v)));
    }
    chart.lastData = { list, x, raw, data, smoothing };
    const shape = [list.map((s) => s.job.id + s.name).join("|"), smoothing > 0, logY, layout.x].join("#");
    if (!chart.plot || chart.shape !== shape) {
      if (chart.plot) chart.plot.destroy();
      chart.plot = makePlot(chart, list, metricNames, smoothing > 0, logY, data);
      chart.shape = shape;
    } else {
      chart.plot.setData(data, !zoom);
    }
    if (zoom) chart.plot.setScale("x", zoom);
    const last = chart.lastPoint;
    chart.el.querySelector(".last").textContent =
      `${compare ? last.label + " · " : ""}${last.name} = ${last.value === null ? "NaN" : formatValue(last.value)} at step ${last.step}`;
    // What the panel rests on: points per series, and what it does not draw and why.
    const counts = list.map((s) => s.steps.length);
    const missing = list.reduce((n, s) => n + countWhere(s.values, (v) => v === null), 0);
    const nonPositive = logY ? list.reduce((n, s) => n + countWhere(s.values, (v) => v !== null && v <= 0), 0) : 0;
    const untimed = layout.x === "step" ? 0 : list.reduce((n, s) => n + countWhere(s.steps, (step) => xOf(s.job.id, step) === null), 0);
    chart.el.querySelector(".note").textContent = [
      `${list.length} series, ${Math.min(...counts)}${Math.max(...counts) !== Math.min(...counts) ? "–" + Math.max(...counts) : ""} points each`,
      missing ? `${missing} NaN/inf values not drawn` : "",
      nonPositive ? `${nonPositive} values ≤ 0 not drawn on the log scale` : "",
      untimed ? `${untimed} points without a time not drawn` : "",
      smoothing ? `EMA smoothing ${smoothing} (raw values faint)` : "",
    ].filter(Boolean).join(" · ");
  }

  function seriesLabel(s, metricNames) {
    if (!compare) return s.name;
    return metricNames.length > 1 ? `${s.job.label} · ${s.name}` : s.job.label;
  }

  function makePlot(chart, list, metricNames, smoothed, logY, data) {
    const width = Math.max(280, chart.el.clientWidth - 44);  // the card's padding
    const series = [{
      label: layout.x === "step" ? "step" : layout.x === "time" ? "time" : "minutes",
      value: (u, v) => (v === null || v === undefined ? "--" : layout.x === "time" ? formatTime(v) : formatValue(v)),
    }];
    list.forEach((s, i) => {
      const colour = compare ? s.job.colour : metricColours[i % metricColours.length];
      const dash = compare ? dashes[metricNames.indexOf(s.name) % dashes.length] : undefined;
      const label = seriesLabel(s, metricNames);
      if (smoothed) series.push({ label: label + " (raw)", stroke: colour + "40", width: 1, spanGaps: true, points: { show: false }, dash: dash,
        value: (u, v) => formatValue(v) });
      series.push({ label: label, stroke: colour, width: 2, spanGaps: true, points: { size: 4 }, dash: dash,
        value: (u, v, si, idx) => (smoothed && idx !== null ? `${formatValue(v)} (raw ${formatValue(u.data[si - 1][idx])})` : formatValue(v)) });
    });
    const plot = new uPlot({
      width: width, height: 220,
      scales: { x: { time: layout.x === "time" }, y: logY ? { distr: 3 } : {} },
      axes: [layout.x === "time" ? {} : { values: asciiTicks }, { values: logY ? logTicks : asciiTicks }],
      series: series,
      legend: { show: true, live: true },
      // One cursor for every panel (sync), so the legend of each reads its values at the same x.
      // Drags zoom every panel through setSelect below; they are not replayed in the other panels.
      cursor: { sync: { key: "job-dashboard", setSeries: false, filters: { pub: (type) => type !== "mousedown" && type !== "mouseup" } },
        drag: { x: true, y: false, setScale: false } },
      hooks: {
        setSelect: [(u) => {
          if (u.select.width < 2) return;
          const min = u.posToVal(u.select.left, "x"), max = u.posToVal(u.select.left + u.select.width, "x");
          u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
          setZoom({ min, max });
        }],
      },
    }, data, chart.el.querySelector(".plot"));
    if (smoothed) {  // the faint raw series are drawn, but listed once (inside the smoothed one's value)
      plot.root.querySelectorAll(".u-legend .u-series").forEach((row, i) => { if (i > 0 && i % 2 === 1) row.classList.add("raw"); });
    }
    plot.over.addEventListener("dblclick", () => setZoom(null));
    return plot;
  }

  function setZoom(range) {
    zoom = range;
    for (const chart of Object.values(charts)) {
      if (!chart.plot) continue;
      if (range) chart.plot.setScale("x", range); else chart.plot.setData(chart.plot.data, true);
    }
    root.dataset.zoom = range ? `${range.min},${range.max}` : "";
  }

  // ---- Downloads: the panel as drawn (PNG, canvas toDataURL) and the points it draws (CSV).
  function fileStem(chart) {
    return `jobs-${jobs.map((j) => j.id).join("-")}-${chart.key.replace(/[^A-Za-z0-9_.-]+/g, "_")}`;
  }
  function download(href, filename) {
    const a = document.createElement("a");
    a.href = href; a.download = filename;
    document.body.appendChild(a); a.click(); a.remove();
  }
  function downloadPng(chart) {
    if (!chart.plot) return;
    const source = chart.plot.ctx.canvas, ratio = source.width / chart.plot.width;
    const head = Math.round((22 + 16 * chart.lastData.list.length) * ratio);
    const canvas = document.createElement("canvas");
    canvas.width = source.width; canvas.height = source.height + head;
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.font = `${Math.round(13 * ratio)}px sans-serif`; ctx.fillStyle = "#1d2330";
    ctx.fillText(chart.title, 8 * ratio, 16 * ratio);
    const names = Array.from(new Set(chart.lastData.list.map((s) => s.name)));
    chart.lastData.list.forEach((s, i) => {
      ctx.fillStyle = compare ? s.job.colour : metricColours[i % metricColours.length];
      ctx.fillText(seriesLabel(s, names), 8 * ratio, (34 + 16 * i) * ratio);
    });
    ctx.drawImage(source, 0, head);
    download(canvas.toDataURL("image/png"), fileStem(chart) + ".png");
  }
  function csvField(text) {
    const value = String(text);
    return /[",\n]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value;
  }
  function downloadCsv(chart) {
    const smoothing = Number(layout.smoothing) || 0;
    const lines = [["job", "run", "metric", "step", "time", "value"].concat(smoothing ? [`ema_${smoothing}`] : []).join(",")];
    for (const s of seriesList(chart)) {
      const steps = s.steps, values = s.values;  // every point, in step order, whatever the chart draws
      const smooth = ema(values, smoothing);
      steps.forEach((step, i) => {
        const t = stepTimes.get(s.job.id).get(step);
        const row = [s.job.id, csvField(s.job.label), csvField(s.name), step, t === undefined ? "" : new Date(t * 1000).toISOString(),
          values[i] === null ? "" : values[i]];
        if (smoothing) row.push(smooth[i] === null ? "" : smooth[i]);
        lines.push(row.join(","));
      });
    }
    const url = URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "text/csv" }));
    download(url, fileStem(chart) + ".csv");
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  // ---- Controls
  const smoothingInput = document.getElementById("dash-smoothing");
  const smoothingValue = document.getElementById("dash-smoothing-value");
  const xSelect = document.getElementById("dash-x");
  const redrawAll = () => { for (const chart of Object.values(charts)) dirty.add(chart); };
  if (smoothingInput) {
    smoothingInput.value = String(layout.smoothing);
    smoothingValue.textContent = String(layout.smoothing);
    smoothingInput.addEventListener("input", () => {
      layout.smoothing = Number(smoothingInput.value);
      smoothingValue.textContent = smoothingInput.value;
      saveLayout(); redrawAll();
    });
  }
  if (xSelect) {
    xSelect.value = layout.x;
    xSelect.addEventListener("change", () => { layout.x = xSelect.value; zoom = null; saveLayout(); redrawAll(); });
  }
  const reset = document.getElementById("dash-reset-zoom");
  if (reset) reset.addEventListener("click", () => setZoom(null));
  window.addEventListener("resize", () => {
    for (const chart of Object.values(charts)) {
      if (chart.plot && chart.el.clientWidth) chart.plot.setSize({ width: Math.max(280, chart.el.clientWidth - 44), height: 220 });
    }
  });

  window.jobDashboard = { charts: charts, formatTick: formatTick, ema: ema, layout: layout, groups: PANEL_GROUPS };  // for tests and devtools

  function flush() {
    if (dirty.size && !historiesPending) {
      const start = performance.now();
      for (const chart of dirty) render(chart);
      performance.measure("dashboard:draw", { start: start, detail: Array.from(dirty, (c) => c.key) });  // read by the bench
      dirty = new Set();
      root.dataset.lastDrawMs = String(Math.round(performance.now()));  // bench/dashboard_render.py reads it
    }
    let seen = 0;
    for (const chart of Object.values(charts)) for (const s of chart.series.values()) seen += s.steps.length;
    root.dataset.pointsSeen = String(seen);
    root.dataset.panelsDrawn = String(Object.values(charts).filter((c) => c.plot).length);
    root.dataset.streamsOpen = String(openStreams);
    window.requestAnimationFrame(flush);
  }
  window.requestAnimationFrame(flush);

  // First everything recorded so far, in columns (one request per run, built by the database), then the
  // live stream from the last point that included; without the history, the stream replays it all.
  // A history column is base64 of big-endian numbers (selectors.metric_history_text: the exact float64
  // bits, decoded here in milliseconds where JSON numbers took ~500 ms to parse); NaN -> null, a gap.
  function decodeColumn(text, bytes, float) {
    const binary = atob(text);
    const view = new DataView(new ArrayBuffer(binary.length));
    for (let i = 0; i < binary.length; i++) view.setUint8(i, binary.charCodeAt(i));
    const column = new Array(binary.length / bytes);
    for (let i = 0; i < column.length; i++) {
      const v = float ? view.getFloat64(i * 8) : view.getInt32(i * 4);
      column[i] = Number.isNaN(v) ? null : v;
    }
    return column;
  }
  // The columns are adopted as they come (ascending steps, no repeats: the selector sorts them), and any
  // other order goes through putPoint point by point.
  function addHistory(job, history) {
    const [timeSteps, times] = history.times;
    for (let i = 0; i < timeSteps.length; i++) putTime(job, timeSteps[i], times[i]);
    for (const [name, encoded] of Object.entries(history.series)) {
      const steps = decodeColumn(encoded[0], 4, false), values = decodeColumn(encoded[1], 8, true);
      if (!steps.length) continue;
      const chart = chartFor(name);
      const series = seriesFor(chart, job, name);
      if (!series.steps.length && steps.every((step, i) => i === 0 || step > steps[i - 1])) {
        series.steps = steps; series.values = values;
      } else {
        for (let i = 0; i < steps.length; i++) putPoint(series, steps[i], values[i]);
      }
      const last = series.steps.length - 1;
      chart.lastPoint = { name: name, step: series.steps[last], value: series.values[last], label: job.label };
      dirty.add(chart);
    }
  }
  let openStreams = jobs.length;
  let historiesPending = jobs.length;  // panels are drawn once every run's history is in, not once per run
  for (const job of jobs) {
    fetch(job.history, { credentials: "same-origin" })  // as preloaded by _dashboard.html (an extra header would miss it)
      .then((response) => {
        if (!response.ok) return Promise.reject(new Error(String(response.status)));
        const start = performance.now();
        return response.json().then((history) => { performance.measure("dashboard:body+parse", { start: start }); return history; });
      })
      .then((history) => {
        const start = performance.now();
        addHistory(job, history);
        performance.measure("dashboard:adopt", { start: start });
        return history.last_id;
      })
      .catch(() => 0)
      .then((lastId) => { historiesPending -= 1; listen(job, lastId); });
  }
  function listen(job, lastId) {
    const source = new EventSource(job.events + (lastId ? "?last_event_id=" + lastId : ""));
    source.addEventListener("metrics", (e) => addPoints(job, JSON.parse(e.data)));
    source.addEventListener("status", () => { if (!compare && window.htmx) htmx.trigger("#job-status", "refresh"); });
    source.addEventListener("samples", () => { if (!compare && window.htmx) htmx.trigger("#job-samples", "refresh"); });
    source.addEventListener("done", () => {
      source.close();  // otherwise EventSource reconnects forever
      openStreams -= 1;
      if (!compare && window.htmx) { htmx.trigger("#job-status", "refresh"); htmx.trigger("#job-samples", "refresh"); }
    });
  }
})();
