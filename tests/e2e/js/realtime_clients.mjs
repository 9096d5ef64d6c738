// Drives a live server's realtime channels with the published clients and prints one JSON summary.
// Usage: node realtime_clients.mjs <baseUrl> <secretKey> <sessionId> <publicAccessToken>
// @trigger.dev/core: initializeSessionStream, appendToSessionStream, readSessionStreamRecords,
// subscribeToSessionStream. @s2-dev/streamstore (fetch transport) with the credentials PUT returned,
// including a trim command.
import { ApiClient } from "@trigger.dev/core/v3";
import { AppendInput, AppendRecord, S2 } from "@s2-dev/streamstore";

const [baseUrl, secretKey, sessionId, publicToken] = process.argv.slice(2);
const agent = new ApiClient(baseUrl, secretKey);
const browser = new ApiClient(baseUrl, publicToken);
const summary = {};

// The agent initializes .out and writes straight to "S2", as StreamsWriterV2 does.
const init = await agent.initializeSessionStream(sessionId, "out");
summary.initVersion = init.version;
const s2 = new S2({
  accessToken: init.headers["x-s2-access-token"],
  endpoints: { account: init.headers["x-s2-endpoint"], basin: init.headers["x-s2-endpoint"] },
});
const stream = s2
  .basin(init.headers["x-s2-basin"])
  .stream(init.headers["x-s2-stream-name"], { forceTransport: "fetch" });
const ack = await stream.append(
  AppendInput.create([
    AppendRecord.string({ body: JSON.stringify({ data: { type: "text-delta", delta: "hel" }, id: "p1" }) }),
    AppendRecord.string({ body: JSON.stringify({ data: { type: "text-delta", delta: "lo" }, id: "p2" }) }),
    AppendRecord.string({ body: "", headers: [["trigger-control", "turn-complete"]] }),
  ]),
);
summary.s2Ack = { start: ack.start.seqNum, end: ack.end.seqNum, tail: ack.tail.seqNum };
const unary = await stream.read({ start: { from: { seqNum: 0 } }, stop: { limits: { count: 10 } } });
summary.s2Read = unary.records.map((r) => ({ seqNum: r.seqNum, body: r.body, headers: r.headers ?? [] }));
summary.s2Tail = (await stream.checkTail()).tail.seqNum;
try {
  await stream.append(AppendInput.create([AppendRecord.string({ body: "late" })], { matchSeqNum: 0 }));
  summary.s2Mismatch = "accepted";
} catch (error) {
  summary.s2Mismatch = error.name;
}
const session = await stream.readSession({ start: { from: { seqNum: 1 } }, stop: { limits: { count: 2 } } });
summary.s2Session = [];
for await (const record of session) {
  summary.s2Session.push(record.seqNum);
}

// The browser appends to .in with the session's public token.
summary.appends = [];
for (const text of ["first", "second"]) {
  summary.appends.push(await browser.appendToSessionStream(sessionId, "in", JSON.stringify({ text })));
}
const drained = await browser.readSessionStreamRecords(sessionId, "in");
summary.inRecords = drained.records.map((r) => ({ seqNum: r.seqNum, data: r.data, id: r.id }));

// The browser tails .out: data chunks arrive as parts, the turn-complete as a control record.
summary.outChunks = [];
summary.outIds = [];
summary.controls = [];
const chunks = await browser.subscribeToSessionStream(sessionId, "out", {
  timeoutInSeconds: 2,
  onPart: (part) => summary.outIds.push(part.id),
  onControl: (control) => summary.controls.push({ subtype: control.subtype, seqNum: control.seqNum }),
});
for await (const chunk of chunks) {
  summary.outChunks.push(chunk);
}

// The agent trims .out behind a finished turn: a bytes command record, so the client sends protobuf.
const trimAck = await stream.append(AppendInput.create([AppendRecord.trim(2)]));
summary.trimAck = { start: trimAck.start.seqNum, end: trimAck.end.seqNum };
const afterTrim = await stream.read({ start: { from: { seqNum: 0 } }, stop: { limits: { count: 10 } } });
summary.afterTrim = afterTrim.records.map((r) => ({ seqNum: r.seqNum, headers: r.headers ?? [] }));

console.log(JSON.stringify(summary));
