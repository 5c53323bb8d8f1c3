// The labeling page: one input at a time, keyboard first, every answer saved immediately.
"use strict";
const cycle = decodeURIComponent(location.pathname.split("/").pop());
const api = (path) => `/api/${encodeURIComponent(cycle)}/${path}`;
let task = null;
let pos = 0;

function el(id) { return document.getElementById(id); }

function setStatus(text, isError) {
  el("status").textContent = text;
  el("status").className = isError ? "error" : "";
}

function render() {
  const done = task.answered >= task.total;
  el("progress").textContent = `${task.answered} of ${task.total} labeled (budget ${task.budget})`;
  el("bar").max = task.total;
  el("bar").value = task.answered;
  el("done").hidden = !done;
  const item = task.items[pos];
  el("input").src = api(`inputs/${item.key}.png`);
  // Blind by default: the model's answer is in the task only when the cycle asks for it.
  const model = task.show_model_answer
    ? ` · model says ${task.classes[item.prediction]} (confidence ${(100 * item.confidence).toFixed(1)}%)`
    : "";
  el("meta").textContent =
    `#${pos + 1}${model}` +
    (item.answered ? ` · your label: ${item.label === null ? "unsure" : task.classes[item.label]}` : "");
  document.querySelectorAll(".classes button").forEach((b, i) => {
    b.classList.toggle("chosen", item.answered && item.label === i);
  });
}

function nextUnanswered(from) {
  for (let k = 1; k <= task.items.length; k++) {
    const i = (from + k) % task.items.length;
    if (!task.items[i].answered) return i;
  }
  return Math.min(from + 1, task.items.length - 1);
}

async function answer(label) {
  const item = task.items[pos];
  const res = await fetch(api("labels"), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ id: item.id, label: label }),
  });
  if (!res.ok) {
    setStatus(`not saved: ${await res.text()}`, true);
    return;
  }
  const progress = await res.json();
  item.answered = true;
  item.label = label === "unsure" ? null : label;
  task.answered = progress.answered;
  setStatus(`saved ${item.id} as ${task.labeler}`, false);
  pos = nextUnanswered(pos);
  render();
  if (task.answered >= task.total) waitForMore();
}

// Labels asked for in rounds: the task grows when the next round is drawn. While everything
// shown is answered, look for new inputs every few seconds and offer the first unanswered one.
let waiting = null;
function waitForMore() {
  if (waiting) return;
  waiting = setInterval(async () => {
    const res = await fetch(api("task"));
    if (!res.ok) return;
    const fresh = await res.json();
    if (fresh.total <= task.items.length) return;
    task.items = fresh.items;
    task.total = fresh.total;
    task.answered = fresh.answered;
    task.budget = fresh.budget;
    clearInterval(waiting);
    waiting = null;
    pos = task.items.findIndex((it) => !it.answered);
    if (pos < 0) pos = 0;
    setStatus(`a new round: ${fresh.total - fresh.answered} more to label`, false);
    render();
  }, 3000);
}

async function load() {
  const res = await fetch(api("task"));
  if (res.status === 401) { location.replace("/login"); return; }
  if (!res.ok) { setStatus(await res.text(), true); return; }
  task = await res.json();
  const box = el("classes");
  task.classes.forEach((name, i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = name;
    b.dataset.label = String(i);
    b.addEventListener("click", () => answer(i));
    box.appendChild(b);
  });
  pos = task.items.findIndex((it) => !it.answered);
  if (pos < 0) pos = 0;
  render();
  if (task.answered >= task.total) waitForMore();
}

el("prev").addEventListener("click", () => { pos = Math.max(0, pos - 1); render(); });
el("next").addEventListener("click", () => { pos = Math.min(task.items.length - 1, pos + 1); render(); });
el("unsure").addEventListener("click", () => answer("unsure"));
document.addEventListener("keydown", (e) => {
  if (!task) return;
  if (/^[0-9]$/.test(e.key) && Number(e.key) < task.classes.length) answer(Number(e.key));
  else if (e.key === "u") answer("unsure");
  else if (e.key === "ArrowLeft") { pos = Math.max(0, pos - 1); render(); }
  else if (e.key === "ArrowRight") { pos = Math.min(task.items.length - 1, pos + 1); render(); }
});
load();
