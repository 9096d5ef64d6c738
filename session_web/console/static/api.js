// The API key for this tab and the one way pages call the API with it.
// The key lives in sessionStorage only and travels only in the Authorization header.

const KEY = "sessions.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY);
}

export function rememberKey(key) {
  sessionStorage.setItem(KEY, key);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function authHeaders(key = apiKey()) {
  return { Authorization: `Bearer ${key}` };
}

/** Send the user to the sign-in page (when there is no key, or the API refused it). */
export function signInAgain(reason) {
  forgetKey();
  const target = new URL("/sign-in", location.origin);
  if (reason) target.searchParams.set("reason", reason);
  location.assign(target);
}

/** Return the key, or leave for the sign-in page when the tab has none. */
export function requireKey() {
  const key = apiKey();
  if (!key) signInAgain();
  return key;
}

async function errorMessage(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    if (body && typeof body.error === "string") return body.error;
  } catch {
    // a plain-text error body
  }
  return text || `HTTP ${response.status}`;
}

/**
 * Call the API and return its JSON. A 401 sends the user back to sign in; other failures throw
 * an ApiError carrying the status and the API's message.
 */
export async function api(path, { method = "GET", body, headers = {}, key } = {}) {
  const init = { method, headers: { ...authHeaders(key), ...headers }, cache: "no-store" };
  if (body !== undefined) {
    if (typeof body === "string") {
      init.body = body;
    } else {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
  }
  const response = await fetch(path, init);
  if (response.status === 401 && key === undefined) {
    signInAgain("refused");
    throw new ApiError(401, "The API key was refused");
  }
  if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
  return response.json();
}

export function sessionPath(ref) {
  return encodeURIComponent(ref);
}

export function wireSignOut() {
  const button = document.getElementById("sign-out");
  if (button) button.addEventListener("click", () => {
    forgetKey();
    location.assign("/sign-in");
  });
}
