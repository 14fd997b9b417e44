"""A headless Chromium driven through its DevTools protocol, for tests of the web viewer.

Only what the tests need: open a page, wait, take a PNG screenshot. The viser page builds
itself over a websocket, so a one-shot ``--screenshot`` cannot wait for it; the DevTools
protocol (a websocket, spoken with the `websockets` package viser depends on) can.
"""
from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

# Flags from the machine notes: no sandbox as root, software GL, no background traffic.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"]


def chromium_path() -> str | None:
    """The Chromium executable (Debian: `chromium`), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium with one page; use as a context manager (it is always stopped).

    Args:
        profile: an empty folder for the browser profile.
        width: window width in pixels.
        height: window height in pixels.
    """

    def __init__(self, profile: Path, width: int = 800, height: int = 600) -> None:
        exe = chromium_path()
        if exe is None:
            raise FileNotFoundError("chromium is not installed (Debian: apt-get install -y chromium)")
        profile.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                                       "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._ws: Any = None
        self._next_id = 0
        try:
            port = self._debug_port(profile / "DevToolsActivePort")
            pages = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
            page = next(p for p in pages if p.get("type") == "page")
            from websockets.sync.client import connect

            self._ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
        except BaseException:
            self.close()
            raise

    def _debug_port(self, path: Path, timeout: float = 30.0) -> int:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if path.is_file() and path.read_text().strip():
                return int(path.read_text().split()[0])
            if self._proc.poll() is not None:
                raise RuntimeError(f"chromium exited with code {self._proc.returncode} before it listened")
            time.sleep(0.1)
        raise TimeoutError("chromium did not open its DevTools port")

    def call(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        """Sends one DevTools command and returns its result (events in between are skipped)."""
        self._next_id += 1
        self._ws.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        deadline = time.time() + timeout
        while True:
            message = json.loads(self._ws.recv(timeout=max(deadline - time.time(), 0.01)))
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def open(self, url: str) -> None:
        self.call("Page.enable")
        self.call("Page.navigate", url=url)

    def screenshot(self, path: Path) -> Path:
        """Saves the page as a PNG."""
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
            self._ws = None
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()
