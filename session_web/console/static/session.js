// One session: its fields, runs and both channels tailing live, plus sending to .in and closing.
import { api, ApiError, authHeaders, requireKey, sessionPath, wireSignOut } from "./api.js";
import { ChannelTail, controlKind, isCommand } from "./sse.js";
import { badge, formatTime, h, prettyJson, sessionStatus, showError, timeCell } from "./ui.js";

const LATEST = 50;
const root = document.getElementById("session");
const ref = root.dataset.session;
const base = sessionPath(ref);
let tails = [];

function field(name, value) {
  return [h("dt", {}, name), h("dd", {}, value ?? "—")];
}

function renderSession(session) {
  document.getElementById("session-id").textContent = session.id;
  document.getElementById("session-status").replaceChildren(badge(sessionStatus(session)));
  document.title = `${session.id} · sessions console`;
  document.getElementById("session-fields").replaceChildren(
    ...field("Type", session.type),
    ...field("Task", session.taskIdentifier),
    ...field("External id", session.externalId),
    ...field("Current run", session.currentRunId),
    ...field("Created", timeCell(session.createdAt)),
    ...field("Updated", timeCell(session.updatedAt)),
    ...field("Expires", timeCell(session.expiresAt)),
    ...field("Closed", timeCell(session.closedAt)),
    ...field("Close reason", session.closedReason),
  );
  document.getElementById("session-tags").replaceChildren(
    ...session.tags.map((tag) => h("span", { class: "tag" }, tag)),
  );
  document.getElementById("session-metadata").textContent = prettyJson(session.metadata);
  document.getElementById("session-trigger-config").textContent = prettyJson(session.triggerConfig ?? null);
  const closed = Boolean(session.closedAt);
  for (const id of ["send", "close"]) {
    for (const control of document.getElementById(id).elements) control.disabled = closed;
  }
  if (closed) document.getElementById("close-status").textContent = "This session is closed.";
}

async function loadSession() {
  const session = await api(`/api/v1/sessions/${base}`);
  renderSession(session);
  return session;
}

async function loadRuns() {
  const note = document.getElementById("runs-note");
  let runs;
  try {
    runs = (await api(`/api/v1/sessions/${base}/runs`)).data;
  } catch (error) {
    note.textContent = error instanceof ApiError && error.status === 404
      ? "This server does not list runs yet."
      : `Could not load runs: ${error.message}`;
    note.hidden = false;
    return;
  }
  note.textContent = "No runs yet.";
  note.hidden = runs.length > 0;
  document.getElementById("run-rows").replaceChildren(
    ...runs.map((run) =>
      h(
        "tr",
        { "data-run": run.id },
        h("td", { "data-label": "Run" }, h("code", {}, run.id)),
        h("td", { "data-label": "Status" }, badge(run.status)),
        h("td", { "data-label": "Reason" }, run.reason),
        h("td", { "data-label": "Created" }, timeCell(run.createdAt)),
        h("td", { "data-label": "Ended" }, timeCell(run.endedAt)),
      ),
    ),
  );
}

/** How a record shows: its kind (data, control, command), a label and the text of its content. */
export function describe(record) {
  const headers = record.headers || [];
  if (isCommand(record)) {
    return { kind: "command", label: headers[0][1] || "command", text: record.body || "" };
  }
  const control = controlKind(record);
  if (control !== null) {
    const others = headers.filter(([name]) => name !== "trigger-control");
    return { kind: "control", label: control, text: others.map(([n, v]) => `${n}: ${v}`).join("\n") };
  }
  let text = record.body || "";
  let label = "data";
  try {
    const envelope = JSON.parse(text);
    if (envelope && typeof envelope === "object" && "data" in envelope) {
      text = typeof envelope.data === "string" ? envelope.data : prettyJson(envelope.data);
      if (envelope.id) label = `data · ${envelope.id}`;
    }
  } catch {
    // a body that is not our envelope: show it as it is
  }
  return { kind: "data", label, text };
}

function recordItem(record) {
  const { kind, label, text } = describe(record);
  return h(
    "li",
    { class: `record record-${kind}`, "data-seq": record.seq_num, "data-kind": kind },
    h(
      "div",
      { class: "record-head" },
      h("span", { class: "seq" }, `#${record.seq_num}`),
      h("span", { class: `kind kind-${kind}` }, label),
      h("time", { datetime: new Date(record.timestamp).toISOString() }, formatTime(record.timestamp)),
    ),
    text ? h("pre", { class: "record-body" }, text) : null,
  );
}

const STATES = { live: "live", reconnecting: "reconnecting…", ended: "ended", failed: "failed" };

function startTails() {
  for (const tail of tails) tail.stop();
  const latest = document.getElementById("start").value === "latest";
  tails = ["out", "in"].map((io) => {
    const pane = document.getElementById(`channel-${io}`);
    const list = pane.querySelector("[data-records]");
    const state = pane.querySelector("[data-state]");
    list.replaceChildren();
    const tail = new ChannelTail(`/realtime/v1/sessions/${base}/${io}`, {
      headers: () => authHeaders(),
      tailOffset: latest ? LATEST : null,
      onRecords: (records) => {
        const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 8;
        list.append(...records.map(recordItem));
        if (atBottom) list.scrollTop = list.scrollHeight;
        if (records.some((record) => controlKind(record) === "session-closed")) {
          loadSession().catch(() => {});
          loadRuns();
        }
      },
      onState: (name, detail) => {
        state.textContent = STATES[name] || name;
        state.dataset.state = name;
        state.title = detail || "";
      },
    });
    tail.run();
    return tail;
  });
}

/** A random part id, so a repeated request is stored once (randomUUID needs a secure context). */
function partId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function wireSend() {
  const form = document.getElementById("send");
  const status = document.getElementById("send-status");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = form.elements.message.value;
    status.textContent = "Sending…";
    try {
      const result = await api(`/realtime/v1/sessions/${base}/in/append`, {
        method: "POST",
        body: message,
        headers: { "Content-Type": "text/plain; charset=utf-8", "X-Part-Id": partId() },
      });
      status.textContent = `Sent as record #${result.seq}.`;
      form.elements.message.value = "";
    } catch (error) {
      status.textContent = `Not sent: ${error.message}`;
    }
  });
}

function wireClose() {
  const form = document.getElementById("close");
  const status = document.getElementById("close-status");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const reason = form.elements.reason.value.trim();
    status.textContent = "Closing…";
    try {
      renderSession(await api(`/api/v1/sessions/${base}/close`, {
        method: "POST",
        body: reason ? { reason } : {},
      }));
      loadRuns();
    } catch (error) {
      status.textContent = `Not closed: ${error.message}`;
    }
  });
}

async function main() {
  if (!requireKey()) return;
  wireSignOut();
  wireSend();
  wireClose();
  document.getElementById("start").addEventListener("change", startTails);
  try {
    await loadSession();
  } catch (error) {
    showError("session-error", `Could not load the session: ${error.message}`);
    return;
  }
  loadRuns();
  startTails();
}

main();
