// The annotation workbench: every action on a key, each one an htmx request that swaps #item.
// Keys are ignored while typing in the rationale or a score field (Esc leaves the field).
(function () {
  "use strict";
  const PAIR_KEYS = {"1": ["A", 2], "2": ["A", 1], "3": ["tie", 0], "4": ["B", 1], "5": ["B", 2],
                     "a": ["A", 1], "b": ["B", 1], "t": ["tie", 0]};
  let busy = false;
  let ranking = [];

  const item = () => document.getElementById("item");
  const typing = (el) => el && (el.tagName === "TEXTAREA" || (el.tagName === "INPUT" && el.type !== "hidden") ||
                               el.tagName === "SELECT");

  function send(formId) {
    const form = document.getElementById(formId);
    if (!form || busy) return;
    busy = true;
    item().classList.add("busy");
    htmx.trigger(form, "submit");
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

  document.addEventListener("htmx:afterSwap", () => { busy = false; ranking = []; });
  document.addEventListener("htmx:responseError", () => { busy = false; item()?.classList.remove("busy"); });
  document.addEventListener("htmx:sendError", () => { busy = false; item()?.classList.remove("busy"); });
})();
