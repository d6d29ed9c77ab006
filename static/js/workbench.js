// The annotation workbench: every action on a key, each one an htmx request that swaps #item.
// Keys are ignored while typing in the rationale or a score field (Esc leaves the field).
(function () {
  "use strict";
  const PAIR_KEYS = {"1": ["A", 2], "2": ["A", 1], "3": ["tie", 0], "4": ["B", 1], "5": ["B", 2],
                     "a": ["A", 1], "b": ["B", 1], "t": ["tie", 0]};
  let ranking = [];
  let rankingFor = null;  // the assignment the ranking in progress belongs to

  const item = () => document.getElementById("item");
  const typing = (el) => el && (el.tagName === "TEXTAREA" || (el.tagName === "INPUT" && el.type !== "hidden") ||
                               el.tagName === "SELECT");

  // A request is in flight while the current #item carries data-busy; the fragment that replaces
  // it does not, so the next key works the moment the next item is on screen. (Not a class: htmx
  // keeps the old element's classes on the new one for the 20 ms settle, and a key would be lost.)
  function send(formId) {
    const form = document.getElementById(formId);
    const current = item();
    if (!form || !current || current.dataset.busy) return;
    current.dataset.busy = "1";
    // htmx.ajax rather than a synthetic submit: the fragment's forms may not be processed by htmx
    // yet when a fast annotator presses the next key right after a swap.
    htmx.ajax("POST", form.getAttribute("hx-post"), {
      source: form, target: "#item", swap: "outerHTML", values: Object.fromEntries(new FormData(form)),
    }).catch(() => { delete current.dataset.busy; });
  }

  function choose(choice, strength) {
    const form = document.getElementById("label-form");
    if (!form) return;
    form.elements.choice.value = choice;
    form.elements.strength.value = strength ? String(strength) : "";
    send("label-form");
  }

  function showRanking() {
    document.querySelectorAll(".wb-response").forEach((el) => {
      const pos = ranking.indexOf(el.dataset.responseId);
      el.classList.toggle("ranked", pos >= 0);
      el.querySelector(".wb-rank").textContent = pos >= 0 ? "#" + (pos + 1) : "";
    });
  }

  function rank(index) {
    if (rankingFor !== item().dataset.assignment) { ranking = []; rankingFor = item().dataset.assignment; }
    const panels = document.querySelectorAll(".wb-response");
    const panel = panels[index];
    if (!panel || ranking.includes(panel.dataset.responseId)) return;
    ranking.push(panel.dataset.responseId);
    if (ranking.length === panels.length - 1) {
      panels.forEach((p) => { if (!ranking.includes(p.dataset.responseId)) ranking.push(p.dataset.responseId); });
    }
    showRanking();
    if (ranking.length === panels.length) {
      const form = document.getElementById("label-form");
      form.elements.ranking.value = ranking.join(",");
      form.elements.choice.value = "ranking";
      send("label-form");
    }
  }

  // Step mode (issue 13): the grades and first wrong step of the step item on screen, kept here until
  // Enter puts them in the form's hidden fields and sends it like any other label. An LM suggestion,
  // when shown, fills the grades in, so Enter alone confirms it (stored as a "reviewed" label).
  const STEP_KEYS = {ternary: {g: 1, n: 0, b: -1}, score5: {"1": 1, "2": 2, "3": 3, "4": 4, "5": 5}};
  const STEP_NAMES = {"1": "good", "0": "neutral", "-1": "bad"};
  let steps = null;  // {assignment, cursor, grades: [int|null], firstError: int|null}

  function stepState() {
    const current = item();
    if (!steps || steps.assignment !== current.dataset.assignment) {
      const rows = [...document.querySelectorAll(".wb-step")];
      steps = {assignment: current.dataset.assignment, cursor: 0, firstError: null,
               grades: rows.map((li) => (li.dataset.suggested === "" ? null : Number(li.dataset.suggested)))};
    }
    return steps;
  }

  function showSteps() {
    const state = stepState();
    const scale = item().dataset.scale;
    document.querySelectorAll(".wb-step").forEach((li, i) => {
      const grade = state.grades[i];
      li.toggleAttribute("aria-current", i === state.cursor);
      if (i === state.cursor) { li.setAttribute("aria-current", "step"); li.scrollIntoView({block: "nearest"}); }
      li.dataset.grade = grade === null ? "" : String(grade);
      li.querySelector(".wb-step-grade").textContent =
        grade === null ? "–" : (scale === "ternary" ? STEP_NAMES[String(grade)] : String(grade));
      li.querySelector(".wb-step-first").hidden = state.firstError !== i;
    });
  }

  function submitSteps() {
    const state = stepState();
    const form = document.getElementById("label-form");
    const missing = state.grades.findIndex((g) => g === null);
    const warning = document.getElementById("wb-step-missing");
    if (missing >= 0) {
      warning.textContent = "Grade every step: step " + (missing + 1) + " has no grade yet.";
      warning.hidden = false;
      state.cursor = missing;
      showSteps();
      return;
    }
    form.elements.grades.value = state.grades.join(",");
    form.elements.first_error.value = state.firstError === null ? "" : String(state.firstError);
    send("label-form");
  }

  function stepKey(event, key) {
    const state = stepState();
    const n = state.grades.length;
    const grade = (STEP_KEYS[item().dataset.scale] || {})[key];
    if (key === "j" || key === "arrowdown") state.cursor = Math.min(n - 1, state.cursor + 1);
    else if (key === "k" || key === "arrowup") state.cursor = Math.max(0, state.cursor - 1);
    else if (grade !== undefined) {
      state.grades[state.cursor] = grade;
      state.cursor = Math.min(n - 1, state.cursor + 1);
    } else if (key === "f") state.firstError = state.firstError === state.cursor ? null : state.cursor;
    else if (key === "enter") { event.preventDefault(); submitSteps(); return; }
    else return;
    event.preventDefault();
    showSteps();
  }

  function toggleGuidelines() {
    const dialog = document.getElementById("guidelines");
    if (dialog.open) dialog.close(); else dialog.showModal();
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const dialog = document.getElementById("guidelines");
    if (typing(document.activeElement)) {
      if (event.key === "Escape") document.activeElement.blur();
      return;
    }
    if (dialog && dialog.open) {
      if (event.key === "g" || event.key === "?") { event.preventDefault(); dialog.close(); }
      return;
    }
    const key = event.key.toLowerCase();
    const kind = item() ? item().dataset.kind : "";
    // In step mode g/n/b grade a step, so the guidelines are on "?" only.
    if (kind === "steps" && key !== "?" && key !== "s" && key !== "r") {
      if (!item().dataset.busy) stepKey(event, key);
      return;
    }
    if (key === "g" || key === "?") { event.preventDefault(); toggleGuidelines(); return; }
    if (key === "u") { event.preventDefault(); send("undo-form"); return; }
    if (key === "s") { event.preventDefault(); send("skip-form"); return; }
    if (key === "r") { event.preventDefault(); document.getElementById("rationale")?.focus(); return; }
    if (key === "c") { event.preventDefault(); document.querySelector(".wb-score")?.focus(); return; }
    if (kind === "ranking") {
      if (key === "backspace") { ranking = []; showRanking(); return; }
      if (/^[1-9]$/.test(key)) { event.preventDefault(); rank(Number(key) - 1); }
      return;
    }
    if (kind === "pair" && PAIR_KEYS[key]) { event.preventDefault(); choose(...PAIR_KEYS[key]); }
  });

  // A new step item (or the page's first) shows its suggested grades and the cursor on step 1.
  document.addEventListener("htmx:afterSettle", () => { if (item()?.dataset.kind === "steps") showSteps(); });
  document.addEventListener("DOMContentLoaded", () => { if (item()?.dataset.kind === "steps") showSteps(); });

  document.addEventListener("htmx:responseError", () => { if (item()) delete item().dataset.busy; });
  document.addEventListener("htmx:sendError", () => { if (item()) delete item().dataset.busy; });
})();
