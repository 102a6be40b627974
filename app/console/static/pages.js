// Dovecote console, models / quick test / label next: progressive enhancement only.
"use strict";

// Label cards: a click or a number key (1-9, on the focused card, else the first one not
// yet labeled) labels the picture without leaving the page; on any failure the form is
// submitted normally, so the error page says what went wrong.
function enhanceLabeling() {
  const cards = () => [...document.querySelectorAll("[data-label-card]:not(.labeled)")];
  if (!cards().length) return;
  const status = document.querySelector("[data-label-status]");

  const fallback = (form, button) => {
    const field = document.createElement("input");
    field.type = "hidden";
    field.name = button.name;
    field.value = button.value;
    form.append(field);
    form.submit();
  };

  const send = async (form, button) => {
    const card = form.closest("[data-label-card]");
    if (card.classList.contains("labeled") || card.classList.contains("busy")) return;
    card.classList.add("busy");
    const body = new FormData(form);
    body.set(button.name, button.value);
    let ok = false;
    try {
      const response = await fetch(form.action, {
        method: "POST", body, credentials: "same-origin", redirect: "manual",
      });
      ok = response.type === "opaqueredirect" || response.ok;
    } catch (err) { ok = false; }
    card.classList.remove("busy");
    if (!ok) { fallback(form, button); return; }
    const next = cards().find((c) => c !== card && c.compareDocumentPosition(card) & Node.DOCUMENT_POSITION_PRECEDING);
    card.classList.add("labeled");
    form.querySelectorAll("button").forEach((b) => { b.disabled = true; });
    const done = card.querySelector("[data-done]");
    const message = `Labeled ${card.querySelector(".name").textContent} as ${button.value}.`;
    if (done) { done.hidden = false; done.textContent = `✓ ${button.value}`; }
    if (status) status.textContent = message;
    (next || cards()[0] || card).focus();
  };

  document.querySelectorAll("form[data-label-form]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!event.submitter) return;
      event.preventDefault();
      send(form, event.submitter);
    });
  });

  document.addEventListener("keydown", (event) => {
    if (event.altKey || event.ctrlKey || event.metaKey || !/^[1-9]$/.test(event.key)) return;
    if (event.target.closest("input, select, textarea")) return;
    const card = event.target.closest("[data-label-card]:not(.labeled)") || cards()[0];
    if (!card) return;
    const button = card.querySelector(`button[data-key="${event.key}"]`);
    if (!button) return;
    event.preventDefault();
    send(button.form, button);
  });
}

// Quick test: show or hide the heat map over the photo.
function enhanceHeatmap() {
  document.querySelectorAll("[data-toggle-heatmap]").forEach((toggle) => {
    const map = toggle.closest("figure").querySelector("[data-heatmap]");
    if (!map) return;
    toggle.addEventListener("change", () => { map.hidden = !toggle.checked; });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  enhanceLabeling();
  enhanceHeatmap();
});
