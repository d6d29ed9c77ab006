// The annotation workbench: every action on a key, each one an htmx request that swaps #item.
// Keys are ignored while typing in the rationale or a score field (Esc leaves the field).
// Which key does what is the view's (webapp/annotation/views.py WORKBENCH_KEYS, in the page as the
// json_script "workbench-keys": {map: {key: [action, argument, words]}}); this file has the actions.
(function () {
  "use strict";
  const KEYS = JSON.parse(document.getElementById("workbench-keys").textContent);
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
    current.dataset.busy = "sending";
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

  // A ternary grade is shown in the words of its key (good, neutral, bad), a score as its number.
  function gradeName(scale, grade) {
    if (scale !== "ternary") return String(grade);
    return Object.values(KEYS["steps:" + scale]).find(([action, arg]) => action === "grade" && arg === grade)[2];
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
        grade === null ? "–" : gradeName(scale, grade);
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

  // A step action changes the grades on screen; none while the last label is on its way.
  function onSteps(change) {
    return (arg) => {
      if (item().dataset.busy) return;
      change(stepState(), arg);
      showSteps();
    };
  }

  function toggleGuidelines() {
    const dialog = document.getElementById("guidelines");
    if (dialog.open) dialog.close(); else dialog.showModal();
  }

  // The actions the view's key map names, each called with the key's argument.
  const ACTIONS = {
    choose: ([choice, strength]) => choose(choice, strength),
    rank: (index) => rank(index),
    restart_ranking: () => { ranking = []; showRanking(); },
    skip: () => send("skip-form"),
    undo: () => send("undo-form"),
    note: () => document.getElementById("rationale")?.focus(),
    scores: () => document.querySelector(".wb-score")?.focus(),
    guidelines: toggleGuidelines,
    leave_field: () => document.activeElement.blur(),
    move: onSteps((state, offset) => {
      state.cursor = Math.max(0, Math.min(state.grades.length - 1, state.cursor + offset));
    }),
    grade: onSteps((state, grade) => {
      state.grades[state.cursor] = grade;
      state.cursor = Math.min(state.grades.length - 1, state.cursor + 1);
    }),
    first_error: onSteps((state) => { state.firstError = state.firstError === state.cursor ? null : state.cursor; }),
    submit_steps: () => { if (!item().dataset.busy) submitSteps(); },
  };

  // The map for what is on screen: a field being typed in, the open guidelines, or the item's kind.
  function keyMap() {
    const dialog = document.getElementById("guidelines");
    if (typing(document.activeElement)) return KEYS.field;
    if (dialog && dialog.open) return KEYS.dialog;
    const current = item();
    const kind = current ? current.dataset.kind : "";
    if (kind === "steps") return KEYS["steps:" + current.dataset.scale] || {};
    return KEYS[kind] || KEYS.item;
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const entry = keyMap()[event.key.toLowerCase()];
    if (!entry) return;
    event.preventDefault();
    ACTIONS[entry[0]](entry[1]);
  });

  // A new step item (or the page's first) shows its suggested grades and the cursor on step 1.
  document.addEventListener("htmx:afterSettle", () => { if (item()?.dataset.kind === "steps") showSteps(); });
  document.addEventListener("DOMContentLoaded", () => { if (item()?.dataset.kind === "steps") showSteps(); });

  document.addEventListener("htmx:responseError", () => { if (item()) delete item().dataset.busy; });
  document.addEventListener("htmx:sendError", () => { if (item()) delete item().dataset.busy; });
})();
