// A live tail of one channel over SSE, read with fetch() so the request can carry the API key
// (EventSource cannot send an Authorization header).

/** Yield {event, data, id} for each event of an SSE body (the HTML spec's parsing, trimmed). */
export async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { event: "message", data: [], id: null };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") {
          if (event.data.length) yield { event: event.event, data: event.data.join("\n"), id: event.id };
          event = { event: "message", data: [], id: null };
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") event.event = value;
        else if (field === "data") event.data.push(value);
        else if (field === "id") event.id = value;
      }
    }
  } finally {
    reader.releaseLock();
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A control record's kind (its trigger-control header), or null. */
export function controlKind(record) {
  const header = (record.headers || []).find(([name]) => name === "trigger-control");
  return header ? header[1] : null;
}

/** A command record (trim, fence): its first header's name is empty. */
export function isCommand(record) {
  return Boolean(record.headers && record.headers.length && record.headers[0][0] === "");
}

//: Statuses after which reconnecting cannot help.
const TERMINAL = new Set([400, 401, 403, 404, 409, 410, 422]);
//: Pings come every 15 s by default; a connection silent for this long is presumed dead.
const STALL_MS = 45000;

/**
 * Tail ``url`` live. Records reach ``onRecords`` once each, in order: after a dropped connection the
 * tail reconnects with ``Last-Event-ID`` set to the last seq_num it delivered and drops anything at or
 * below it. ``tailOffset`` starts the first read that many records before the tail.
 */
export class ChannelTail {
  constructor(url, { headers, onRecords, onState, tailOffset = null }) {
    this.url = url;
    this.headers = headers;
    this.onRecords = onRecords;
    this.onState = onState;
    this.tailOffset = tailOffset;
    this.lastSeq = null;
    this.stopped = false;
    this.controller = null;
  }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
  }

  async run() {
    let backoff = 100;
    while (!this.stopped) {
      let ended = false;
      try {
        ended = await this.readOnce();
        backoff = 100;
      } catch (error) {
        if (this.stopped) return;
        if (error.terminal) {
          this.onState("failed", error.message);
          return;
        }
      }
      if (ended) {
        this.onState("ended");
        return;
      }
      if (this.stopped) return;
      this.onState("reconnecting");
      await sleep(backoff * (0.5 + Math.random() / 2));
      backoff = Math.min(backoff * 2, 5000);
    }
  }

  /** One connection; true when the session closed (nothing more will come). */
  async readOnce() {
    const controller = new AbortController();
    this.controller = controller;
    const headers = { ...this.headers(), Accept: "text/event-stream" };
    let url = this.url;
    if (this.lastSeq !== null) headers["Last-Event-ID"] = String(this.lastSeq);
    else if (this.tailOffset !== null) url += `?tail_offset=${this.tailOffset}`;
    let stall = setTimeout(() => controller.abort(), STALL_MS);
    try {
      const response = await fetch(url, { headers, signal: controller.signal, cache: "no-store" });
      if (!response.ok) {
        const error = new Error(`HTTP ${response.status}: ${(await response.text()).slice(0, 200)}`);
        error.terminal = TERMINAL.has(response.status);
        throw error;
      }
      this.onState("live");
      let closed = false;
      for await (const event of sseEvents(response.body)) {
        clearTimeout(stall);
        stall = setTimeout(() => controller.abort(), STALL_MS);
        if (event.event === "error") break;
        if (event.event !== "batch") continue;
        const records = JSON.parse(event.data).records.filter(
          (record) => this.lastSeq === null || record.seq_num > this.lastSeq,
        );
        if (!records.length) continue;
        this.lastSeq = records[records.length - 1].seq_num;
        if (records.some((record) => controlKind(record) === "session-closed")) closed = true;
        this.onRecords(records);
      }
      return closed;
    } finally {
      clearTimeout(stall);
      this.controller = null;
    }
  }
}
