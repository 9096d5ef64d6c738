// Drives a live server's control plane with the published ApiClient and prints one JSON summary.
// Usage: node control_plane.mjs <baseUrl> <secretKey>
// The environment behind <secretKey> must hold no sessions yet, so list counts are exact.
// Nothing is asserted here: every observed value goes into the summary, and the pytest side checks
// it. An unexpected client error still exits non-zero with the step that raised it.
import { ApiClient } from "@trigger.dev/core/v3";

const [baseUrl, secretKey] = process.argv.slice(2);
if (!baseUrl || !secretKey) {
  console.error("usage: node control_plane.mjs <baseUrl> <secretKey>");
  process.exit(2);
}

// Every HTTP exchange the client makes, so the test can see statuses, headers and retries.
const exchanges = [];
const realFetch = globalThis.fetch;
globalThis.fetch = async (input, init) => {
  const response = await realFetch(input, init);
  const url = new URL(typeof input === "string" ? input : input.url);
  exchanges.push({
    method: init?.method ?? "GET",
    path: url.pathname,
    query: url.search,
    status: response.status,
    shouldRetry: response.headers.get("x-should-retry"),
  });
  return response;
};

const agent = new ApiClient(baseUrl, secretKey);
const run = Math.random().toString(36).slice(2, 10);
const summary = { run };
let step = "start";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The session fields the test compares, with dates as ISO strings (the client parses them). */
function item(session) {
  const iso = (d) => (d instanceof Date ? d.toISOString() : d);
  return {
    id: session.id,
    externalId: session.externalId,
    type: session.type,
    taskIdentifier: session.taskIdentifier,
    triggerConfig: session.triggerConfig,
    currentRunId: session.currentRunId,
    tags: session.tags,
    metadata: session.metadata,
    closedAt: iso(session.closedAt),
    closedReason: session.closedReason,
    expiresAt: iso(session.expiresAt),
    createdAt: iso(session.createdAt),
    updatedAt: iso(session.updatedAt),
    datesAreDates: [session.createdAt, session.updatedAt].every((d) => d instanceof Date),
  };
}

/** Call the client and record the API error it raises, with the requests it took to raise it. */
async function failure(promise) {
  const before = exchanges.length;
  try {
    const value = await promise;
    return { resolved: true, value };
  } catch (error) {
    return {
      resolved: false,
      name: error.constructor.name,
      status: error.status,
      message: error.message,
      shouldRetry: error.headers?.["x-should-retry"] ?? null,
      attempts: exchanges.length - before,
    };
  }
}

/** One list page as ids plus which cursors it carries. */
function page(listed) {
  return {
    ids: listed.data.map((s) => s.id),
    hasNext: listed.hasNextPage(),
    hasPrevious: listed.hasPreviousPage(),
  };
}

/** Every id a filter matches, following next pages (bounded). */
async function listAll(options) {
  let listed = await agent.listSessions({ limit: 100, ...options });
  const ids = listed.data.map((s) => s.id);
  for (let pages = 1; listed.hasNextPage() && pages < 20; pages++) {
    listed = await listed.getNextPage();
    ids.push(...listed.data.map((s) => s.id));
  }
  return ids;
}

try {
  // --- create, create again -----------------------------------------------------------------------
  step = "create";
  const externalId = `chat-${run}`;
  const createBody = {
    type: "chat.agent",
    externalId,
    taskIdentifier: "agent",
    triggerConfig: { basePayload: { chatId: externalId }, idleTimeoutInSeconds: 60, maxAttempts: 3 },
    tags: [`chat:${externalId}`, "alpha"],
    metadata: { owner: "compat", n: 1 },
  };
  const first = await agent.createSession(createBody).withResponse();
  summary.create = {
    status: first.response.status,
    isCached: first.data.isCached,
    runId: first.data.runId,
    hasToken: typeof first.data.publicAccessToken === "string",
    session: item(first.data),
  };

  step = "create again";
  const again = await agent
    .createSession({
      ...createBody,
      type: "ignored",
      tags: ["ignored"],
      metadata: { ignored: true },
      triggerConfig: { basePayload: { chatId: externalId, turn: 2 } },
    })
    .withResponse();
  summary.createAgain = {
    status: again.response.status,
    isCached: again.data.isCached,
    runId: again.data.runId,
    session: item(again.data),
  };
  const id = first.data.id;

  // --- retrieve by both id forms, with the secret key and with the session's token ----------------
  step = "retrieve";
  const browser = new ApiClient(baseUrl, first.data.publicAccessToken);
  summary.retrieve = {
    secretById: item(await agent.retrieveSession(id)),
    secretByExternalId: item(await agent.retrieveSession(externalId)),
    tokenById: item(await browser.retrieveSession(id)),
    tokenByExternalId: item(await browser.retrieveSession(externalId)),
  };
  summary.retrieveMissing = await failure(agent.retrieveSession(`missing-${run}`));

  // --- update: the secret key may, the session token (read+write, no admin) may not ---------------
  step = "update";
  const updated = await agent.updateSession(externalId, {
    tags: ["alpha", "beta"],
    metadata: { owner: "compat", n: 2, nested: { ok: true } },
  });
  summary.update = {
    returned: item(updated),
    reread: item(await agent.retrieveSession(id)),
  };
  summary.updateWithToken = await failure(browser.updateSession(id, { tags: ["nope"] }));

  // --- sessions to list: 25 to page through, a time mark, then 3 more -----------------------------
  step = "create pages";
  const t0 = Date.now();
  summary.pageIds = [];
  for (let i = 0; i < 25; i++) {
    const created = await agent.createSession({
      type: "page",
      externalId: `page-${run}-${i}`,
      taskIdentifier: "pager",
      triggerConfig: { basePayload: { i } },
      tags: [`page-${i % 2 === 0 ? "even" : "odd"}`],
    });
    summary.pageIds.push(created.id);
  }
  // The gaps keep the mark strictly between the two groups' createdAt (millisecond dates).
  await sleep(25);
  const mark = Date.now();
  await sleep(25);
  step = "create late";
  // The last one expires shortly: a session cannot be created already expired (see below).
  const expiresAt = new Date(Date.now() + 500);
  const late = [];
  for (let i = 0; i < 3; i++) {
    late.push(
      await agent.createSession({
        type: "late",
        taskIdentifier: "pager",
        triggerConfig: { basePayload: {} },
        tags: ["late"],
        ...(i === 2 ? { expiresAt } : {}),
      }),
    );
  }
  summary.lateIds = late.map((s) => s.id);
  summary.expiredItem = item(late[2]);
  step = "close for the status filters";
  summary.closedPageIds = [summary.pageIds[0], summary.pageIds[1]];
  for (const closing of summary.closedPageIds) {
    await agent.closeSession(closing, { reason: "paged" });
  }
  summary.lateExternalIds = late.map((s) => s.externalId);

  // --- list filters ------------------------------------------------------------------------------
  await sleep(Math.max(0, expiresAt.getTime() - Date.now() + 50));
  step = "list filters";
  summary.filters = {
    all: await listAll({}),
    typePage: await listAll({ type: "page" }),
    typePageAndLate: await listAll({ type: ["page", "late"] }),
    tagAlpha: await listAll({ tag: "alpha" }),
    tagBetaOrLate: await listAll({ tag: ["beta", "late"] }),
    tagEven: await listAll({ tag: "page-even", type: "page" }),
    taskAgent: await listAll({ taskIdentifier: "agent" }),
    taskPager: await listAll({ taskIdentifier: ["pager"] }),
    taskBoth: await listAll({ taskIdentifier: ["pager", "agent"] }),
    externalId: await listAll({ externalId }),
    externalIdUnknown: await listAll({ externalId: `nobody-${run}` }),
    statusActive: await listAll({ status: "ACTIVE" }),
    statusClosed: await listAll({ status: "CLOSED" }),
    statusExpired: await listAll({ status: "EXPIRED" }),
    statusActiveClosed: await listAll({ status: ["ACTIVE", "CLOSED"] }),
    periodHour: await listAll({ period: "1h" }),
    fromMark: await listAll({ from: mark }),
    toMark: await listAll({ to: new Date(mark) }),
    fromT0ToMark: await listAll({ from: new Date(t0), to: mark }),
    pagesClosedOnly: await listAll({ type: "page", status: "CLOSED" }),
  };
  summary.listItem = item((await agent.listSessions({ externalId, limit: 1 })).data[0]);

  // --- paging: forward with getNextPage, then backward from listSessions({before}) ----------------
  step = "page forward";
  const p1 = await agent.listSessions({ type: "page", limit: 10 });
  const p2 = await p1.getNextPage();
  const p3 = await p2.getNextPage();
  summary.forward = [page(p1), page(p2), page(p3)];
  step = "page backward";
  const b2 = await agent.listSessions({ type: "page", limit: 10, before: p3.pagination.previous });
  const b1 = await agent.listSessions({ type: "page", limit: 10, before: b2.pagination.previous });
  summary.backward = [page(b2), page(b1)];
  step = "page forward again";
  const f3 = await agent.listSessions({ type: "page", limit: 10, after: b2.pagination.next });
  summary.forwardFromBackward = page(f3);
  // The client re-sends page[after] beside page[before] here: the server refuses both cursors.
  summary.bothCursors = await failure(p2.getPreviousPage());
  summary.pageQueries = exchanges
    .filter((e) => e.method === "GET" && e.path === "/api/v1/sessions" && e.query.includes("page%5Bsize%5D=10"))
    .map((e) => e.query);

  // --- close, close again ------------------------------------------------------------------------
  step = "close";
  const closed = await agent.closeSession(id, { reason: "done" });
  summary.close = item(closed);
  step = "close again";
  summary.closeAgain = item(await agent.closeSession(externalId, { reason: "another reason" }));
  summary.closeAgainDefaultBody = item(await agent.closeSession(id));
  summary.closeWithToken = await failure(browser.closeSession(id));

  // --- negative cases: permanent 4xx answers are not retried --------------------------------------
  step = "negative cases";
  summary.reservedPrefix = await failure(
    agent.createSession({ ...createBody, externalId: `session_${run}` }),
  );
  summary.recreateClosed = await failure(agent.createSession(createBody));
  summary.createExpired = await failure(
    agent.createSession({ ...createBody, externalId: `expired-${run}`, expiresAt: new Date(Date.now() - 60_000) }),
  );

  summary.exchanges = exchanges.length;
  summary.serverErrors = exchanges.filter((e) => e.status >= 500);
  console.log(JSON.stringify(summary));
} catch (error) {
  console.error(`control_plane.mjs failed at step "${step}": ${error.constructor.name}: ${error.message}`);
  if (error.status) console.error(`HTTP ${error.status}`, JSON.stringify(error.headers ?? {}));
  console.error(JSON.stringify(exchanges.slice(-5)));
  process.exit(1);
}
