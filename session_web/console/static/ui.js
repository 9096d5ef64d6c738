// Small DOM and formatting helpers shared by the pages.

/** Build an element: h("a", {href: "/x", class: "c"}, "text", child…). Text is never parsed as HTML. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function formatTime(value) {
  if (!value) return "—";
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

export function timeCell(value) {
  return value ? h("time", { datetime: value }, formatTime(value)) : "—";
}

/** A session's status as the list filter names it (closed wins, then expiry). */
export function sessionStatus(session, now = Date.now()) {
  if (session.closedAt) return "CLOSED";
  if (session.expiresAt && Date.parse(session.expiresAt) <= now) return "EXPIRED";
  return "ACTIVE";
}

export function badge(status) {
  return h("span", { class: `badge badge-${String(status).toLowerCase()}` }, status);
}

export function showError(id, message) {
  const el = document.getElementById(id);
  el.textContent = message;
  el.hidden = !message;
}

export function prettyJson(value) {
  return JSON.stringify(value, null, 2);
}
