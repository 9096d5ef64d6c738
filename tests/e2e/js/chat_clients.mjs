// Converses with the Python example agent (examples/chat_agent) through @trigger.dev/sdk 4.8.3's
// chat clients, AgentChat and TriggerChatTransport, and prints one JSON summary.
// Usage: node chat_clients.mjs <baseUrl> <secretKey> <agentTask> <runTag>
// Nothing is asserted here: what each client saw goes into the summary, and the pytest side checks
// it. An unexpected client error still exits non-zero with the step that raised it.
import { auth, configure, sessions } from "@trigger.dev/sdk";
import { chat } from "@trigger.dev/sdk/ai";
import { AgentChat, TriggerChatTransport } from "@trigger.dev/sdk/chat";

const [baseUrl, secretKey, task, runTag] = process.argv.slice(2);
if (!baseUrl || !secretKey || !task || !runTag) {
  console.error("usage: node chat_clients.mjs <baseUrl> <secretKey> <agentTask> <runTag>");
  process.exit(2);
}
configure({ baseURL: baseUrl, accessToken: secretKey });

const summary = {};
let step = "start";

/** Every chunk of a UIMessageChunk stream, and the text its text-deltas spell. */
async function drain(stream) {
  const chunks = [];
  if (stream === null) return { isNull: true, types: [], text: "" };
  for await (const chunk of stream) chunks.push(chunk);
  const text = chunks.filter((c) => c.type === "text-delta").map((c) => c.delta).join("");
  return { types: chunks.map((c) => c.type), text };
}

const userMessage = (id, text) => ({ id, role: "user", parts: [{ type: "text", text }] });

try {
  // --- AgentChat: two turns, a reconnect that finds the turn settled, close --------------------
  step = "agentChat";
  const agentChatId = `agentchat-${runTag}`;
  const agentChat = new AgentChat({ agent: task, id: agentChatId, baseURL: baseUrl });
  const turns = [];
  for (const text of ["hello agent", "and again"]) {
    turns.push(await (await agentChat.sendMessage(text)).text()); // each turn read to its end
  }
  summary.agentChat = { chatId: agentChatId, turns };
  step = "agentChat.reconnect";
  summary.agentChat.reconnect = await drain(await agentChat.reconnect());
  step = "agentChat.close";
  summary.agentChat.closed = await agentChat.close();

  // --- auth.createPublicToken, through the claims route ------------------------------------------
  step = "createPublicToken";
  const transportChatId = `transport-${runTag}`;
  const publicToken = await auth.createPublicToken({
    scopes: { read: { sessions: transportChatId }, write: { sessions: transportChatId } },
    expirationTime: "1h",
  });
  summary.publicToken = { parts: publicToken.split(".").length };

  // --- TriggerChatTransport: a browser's transport, started by a server action ----------------
  step = "transport";
  const startSession = chat.createStartSessionAction(task, { tokenTTL: "1h" });
  const states = [];
  const transport = new TriggerChatTransport({
    task,
    baseURL: baseUrl,
    accessToken: async () => publicToken,
    startSession: ({ chatId, clientData }) => startSession({ chatId, clientData }),
    onSessionChange: (chatId, session) => states.push(session),
  });
  const m1 = userMessage("u1", "first words");
  const turn1 = await drain(
    await transport.sendMessages({ trigger: "submit-message", chatId: transportChatId, messages: [m1] }),
  );
  const a1 = { id: "a1", role: "assistant", parts: [{ type: "text", text: turn1.text }] };
  const m2 = userMessage("u2", "second words");
  const turn2 = await drain(
    await transport.sendMessages({ trigger: "submit-message", chatId: transportChatId, messages: [m1, a1, m2] }),
  );
  summary.transport = { chatId: transportChatId, turns: [turn1, turn2] };

  // A page reloaded while it believed a turn was streaming: the reconnect peeks, finds the
  // turn settled and ends at once.
  step = "transport.reconnect";
  const last = states.at(-1);
  const reloaded = new TriggerChatTransport({
    task,
    baseURL: baseUrl,
    accessToken: async () => publicToken,
    sessions: {
      [transportChatId]: { publicAccessToken: last.publicAccessToken, lastEventId: last.lastEventId, isStreaming: true },
    },
  });
  summary.transport.reconnect = await drain(await reloaded.reconnectToStream({ chatId: transportChatId }));

  // Closing the session ends it for every client: the marker reaches readers, sends are refused.
  step = "transport.close";
  const closed = await sessions.close(transportChatId, { reason: "bye" });
  summary.transport.closedReason = closed.closedReason;
  try {
    await transport.sendMessages({
      trigger: "submit-message",
      chatId: transportChatId,
      messages: [m1, a1, m2, userMessage("u3", "too late")],
    });
    summary.transport.afterClose = "sent";
  } catch (error) {
    summary.transport.afterClose = String(error?.message ?? error);
  }
} catch (error) {
  console.error(`step ${step} failed:`, error);
  console.log(JSON.stringify(summary));
  process.exit(1);
}
console.log(JSON.stringify(summary));
