// The sessions list: the page's query names the filters and the cursor; the API does the rest.
import { api, requireKey, wireSignOut } from "./api.js";
import { badge, h, sessionStatus, showError, timeCell } from "./ui.js";

const PAGE_SIZE = 20;
//: console query name -> list API parameter
const FILTERS = {
  type: "filter[type]",
  tag: "filter[tags]",
  task: "filter[taskIdentifier]",
  externalId: "filter[externalId]",
  status: "filter[status]",
  period: "filter[createdAt][period]",
};

function apiQuery(params) {
  const query = new URLSearchParams({ "page[size]": String(PAGE_SIZE) });
  for (const [name, param] of Object.entries(FILTERS)) {
    const value = params.get(name);
    if (value) query.set(param, value);
  }
  if (params.get("after")) query.set("page[after]", params.get("after"));
  else if (params.get("before")) query.set("page[before]", params.get("before"));
  return query;
}

function fillForm(params) {
  const form = document.getElementById("filters");
  for (const name of Object.keys(FILTERS)) form.elements[name].value = params.get(name) || "";
}

function pageLink(id, params, cursorName, cursor) {
  const link = document.getElementById(id);
  if (!cursor) {
    link.hidden = true;
    link.removeAttribute("href");
    return;
  }
  const target = new URLSearchParams();
  for (const name of Object.keys(FILTERS)) if (params.get(name)) target.set(name, params.get(name));
  target.set(cursorName, cursor);
  link.href = `/?${target}`;
  link.hidden = false;
}

function row(session) {
  const href = `/sessions/${encodeURIComponent(session.id)}`;
  return h(
    "tr",
    { "data-session": session.id },
    h(
      "td",
      { "data-label": "Session" },
      h(
        "div",
        { class: "cell" },
        h("a", { href }, session.id),
        session.externalId ? h("div", { class: "muted small" }, session.externalId) : null,
      ),
    ),
    h("td", { "data-label": "Type" }, session.type),
    h("td", { "data-label": "Task" }, session.taskIdentifier),
    h("td", { "data-label": "Status" }, badge(sessionStatus(session))),
    h("td", { "data-label": "Tags" }, session.tags.map((tag) => h("span", { class: "tag" }, tag))),
    h("td", { "data-label": "Created" }, timeCell(session.createdAt)),
    h("td", { "data-label": "Closed" }, timeCell(session.closedAt)),
  );
}

async function load() {
  if (!requireKey()) return;
  wireSignOut();
  const params = new URLSearchParams(location.search);
  fillForm(params);
  let page;
  try {
    page = await api(`/api/v1/sessions?${apiQuery(params)}`);
  } catch (error) {
    showError("list-error", `Could not list sessions: ${error.message}`);
    return;
  }
  document.getElementById("session-rows").replaceChildren(...page.data.map(row));
  document.getElementById("empty").hidden = page.data.length > 0;
  pageLink("page-previous", params, "before", page.pagination.previous);
  pageLink("page-next", params, "after", page.pagination.next);
}

load();
