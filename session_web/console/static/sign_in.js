// Sign-in: check the key against the API before keeping it for the tab.
import { api, ApiError, apiKey, rememberKey, forgetKey } from "./api.js";
import { showError } from "./ui.js";

const form = document.getElementById("sign-in");
const input = document.getElementById("api-key");

if (new URLSearchParams(location.search).get("reason") === "refused") {
  showError("sign-in-error", "The API refused the key this tab held. Sign in again.");
} else if (apiKey()) {
  location.replace("/");
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = input.value.trim();
  showError("sign-in-error", "");
  try {
    await api("/api/v1/sessions?page%5Bsize%5D=1", { key });
  } catch (error) {
    forgetKey();
    const refused = error instanceof ApiError && (error.status === 401 || error.status === 403);
    showError(
      "sign-in-error",
      refused ? "That API key was refused. Check it and try again." : `Could not sign in: ${error.message}`,
    );
    input.select();
    return;
  }
  rememberKey(key);
  location.assign("/");
});
