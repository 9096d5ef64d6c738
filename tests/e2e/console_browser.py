"""Debian's chromium driven by Playwright, for the console's browser tests and its screenshots.

Playwright never downloads a browser here: it launches the system's chromium by path, headless,
with the network features a closed machine lacks turned off.
"""

from __future__ import annotations

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL_COMMAND = "apt-get install -y --no-install-recommends --no-upgrade chromium"


def launch_chromium(playwright):  # type: ignore[no-untyped-def]
    """Launch the system chromium; a missing one raises with the command that installs it."""
    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} not found. Install it with:  {INSTALL_COMMAND}  (or run .ci/run)")
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
