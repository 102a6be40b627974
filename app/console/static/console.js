// Dovecote console: progressive enhancement only; every page works without this file.
"use strict";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

// Upload: drop files (or a zip) on the form; they go into its file input and it submits.
function enhanceDropzones() {
  document.querySelectorAll("form[data-dropzone]").forEach((form) => {
    const zone = form.querySelector(".drop");
    const input = form.querySelector('input[type="file"]');
    if (!zone || !input) return;
    const hint = form.querySelector("[data-drop-hint]");
    ["dragenter", "dragover"].forEach((type) => zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("over");
    }));
    ["dragleave", "drop"].forEach((type) => zone.addEventListener(type, () => zone.classList.remove("over")));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      if (!event.dataTransfer || !event.dataTransfer.files.length) return;
      input.files = event.dataTransfer.files;
      if (hint) hint.textContent = `Uploading ${input.files.length} file(s)…`;
      form.requestSubmit();
    });
    form.addEventListener("submit", () => {
      const button = form.querySelector('button[type="submit"]');
      if (button) { button.disabled = true; button.textContent = "Uploading…"; }
    });
  });
}

// Selects that choose a page (the training method) reload it on change.
function enhanceAutosubmit() {
  document.querySelectorAll("select[data-autosubmit]").forEach((select) => {
    select.addEventListener("change", () => select.form.submit());
  });
  document.querySelectorAll("[data-hide-with-js]").forEach((el) => { el.hidden = true; });
}

function enhanceConfirms() {
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
}

function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  if (h) return `${h} h ${String(m).padStart(2, "0")} min`;
  if (m) return `${m} min ${String(r).padStart(2, "0")} s`;
  return `${r} s`;
}

function renderHistory(table, history) {
  const columns = [];
  history.forEach((record) => Object.keys(record).forEach((k) => { if (!columns.includes(k)) columns.push(k); }));
  const head = document.createElement("tr");
  columns.forEach((c) => { const th = document.createElement("th"); th.scope = "col"; th.textContent = c; head.append(th); });
  table.tHead.replaceChildren(head);
  const rows = history.map((record) => {
    const tr = document.createElement("tr");
    columns.forEach((c) => { const td = document.createElement("td"); td.textContent = record[c] ?? ""; tr.append(td); });
    return tr;
  });
  table.tBodies[0].replaceChildren(...rows);
}

// The job page: poll its JSON once a second until the job ends.
function followJob() {
  const root = document.querySelector("[data-job-poll]");
  if (!root) return;
  const part = (name) => document.querySelector(`[data-job="${name}"]`);
  const show = (state) => {
    const status = part("status");
    status.textContent = state.status;
    status.className = `status status-${state.status}`;
    part("stage").textContent = state.stage;
    part("progress").value = state.progress;
    part("percent").textContent = `${(100 * state.progress).toFixed(1)}%`;
    part("eta").textContent = formatDuration(state.eta_seconds);
    const error = part("error");
    error.hidden = !state.error;
    error.textContent = state.error ? state.error.detail : "";
    if (state.model_id) {
      part("model-link").href = `/console/models/${state.model_id}`;
      part("model").hidden = false;
    }
    renderHistory(part("history"), state.history);
    part("no-history").hidden = state.history.length > 0;
    part("cancel").hidden = state.terminal;
  };
  const poll = async () => {
    try {
      const response = await fetch(root.dataset.jobPoll, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (response.ok) {
        const state = await response.json();
        show(state);
        if (state.terminal) return;
      }
    } catch (err) { /* a blip: try again */ }
    window.setTimeout(poll, 1000);
  };
  window.setTimeout(poll, 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  enhanceDropzones();
  enhanceAutosubmit();
  enhanceConfirms();
  followJob();
});
window.dovecoteCsrfToken = csrfToken;
