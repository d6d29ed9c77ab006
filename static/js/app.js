// Behaviour every page shares. Pages carry no inline script and htmx evaluates no strings (the
// Content-Security-Policy forbids both), so what would be an inline handler or an hx-trigger filter
// is a data- attribute read here.

// <form data-confirm="question">: ask before submitting.
document.addEventListener("submit", (event) => {
  const question = event.target.dataset && event.target.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});

// data-pause-while="selector": skip this element's htmx request while the selector matches something
// (a poll that would redraw a table must not clear the boxes a user is ticking).
// data-ignore-events-from="selector": no request for events coming from inside that part of the element.
document.addEventListener("htmx:confirm", (event) => {
  const element = event.detail.elt;
  const pauseWhile = element.dataset.pauseWhile;
  if (pauseWhile && document.querySelector(pauseWhile)) {
    event.preventDefault();
    return;
  }
  const ignoreFrom = element.dataset.ignoreEventsFrom;
  const trigger = event.detail.triggeringEvent;
  if (ignoreFrom && trigger && trigger.target instanceof Element && trigger.target.closest(ignoreFrom)) {
    event.preventDefault();
  }
});
