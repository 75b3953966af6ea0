"""Screenshots of the Prefect UI showing a textmill run, for docs/operations.md.

    python tools/ui_screenshot.py [--corpus seeds] [--out-dir docs]

Starts `prefect server start` (UI on) on a free local port with a throwaway PREFECT_HOME, runs
`textmill run CORPUS` against it, then drives headless Chromium (Debian's `chromium` package:
`apt-get install chromium`) over the DevTools protocol (the `websockets` client Prefect
installs): it opens the flow run's page and its artifacts tab, waits until each shows the run,
and saves each as a PNG. Nothing is mocked: the pictures show what the server recorded.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from websockets.sync.client import connect

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.measure import PrefectServer, bench_env  # noqa: E402

MAX_PNG_BYTES = 1_000_000
SETTLE_SECONDS = 2.0
PAGES = {  # file name: (path under the UI, tab to click or None, texts the picture must show)
    "prefect-ui-run.png": ("runs/flow-run/{run_id}", None, ["textmill-seeds", "Completed", "clean: 5 computed"]),
    "prefect-ui-task-runs.png": ("runs/flow-run/{run_id}", "Task Runs", ["clean-0", "entities-index", "publish"]),
    "prefect-ui-artifacts.png": (
        "runs/flow-run/{run_id}", "Artifacts", ["textmill-summary", "textmill-steps", "textmill-progress"],
    ),
    "prefect-ui-summary.png": ("artifacts/artifact/{summary_id}", None, ["New or changed files read this run", "Duplicate clusters"]),
}


def artifact_id(api_url: str, flow_run_id: str, key: str) -> str:
    body = json.dumps({"flow_runs": {"id": {"any_": [flow_run_id]}}, "artifacts": {"key": {"any_": [key]}}}).encode()
    request = urllib.request.Request(
        f"{api_url}/artifacts/filter", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        found = json.load(response)
    if not found:
        raise SystemExit(f"the run {flow_run_id} has no {key} artifact")
    return str(found[0]["id"])


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("headless Chromium not found: install Debian's package with `apt-get install chromium`")


class HeadlessChromium:
    """Chromium driven over the DevTools protocol, so a picture is taken only once the page shows
    what it should (the UI fetches its data after the page has loaded)."""

    def __init__(self, binary: str, width: int, height: int) -> None:
        self.binary, self.width, self.height = binary, width, height
        self.profile = tempfile.TemporaryDirectory(prefix="textmill-chromium-", ignore_cleanup_errors=True)
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    def __enter__(self) -> HeadlessChromium:
        self.proc = subprocess.Popen(
            [
                self.binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                "--remote-debugging-port=0", f"--user-data-dir={self.profile.name}",
                f"--window-size={self.width},{self.height}", "about:blank",
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if line.startswith("DevTools listening on "):
                self.port = int(line.split("127.0.0.1:", 1)[1].split("/", 1)[0])
                break
        if not self.port:
            raise SystemExit("Chromium exited before its DevTools endpoint came up")
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.profile.cleanup()

    @staticmethod
    def wait_until(call: Callable[..., dict], expression: str, timeout: float, what: str) -> None:
        """Evaluate `expression` in the page every half second until it is true."""
        deadline = time.monotonic() + timeout
        while not call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value"):
            if time.monotonic() > deadline:
                shown = call("Runtime.evaluate", expression="document.body.innerText", returnByValue=True)
                text = " ".join(str(shown["result"].get("value", "")).split())[:600]
                raise SystemExit(f"{what} within {timeout:.0f} s; the page shows: {text}")
            time.sleep(0.5)

    def screenshot(self, url: str, path: Path, click: str | None, wait_for: list[str], timeout: float = 90.0) -> None:
        """Open `url`, click the tab labelled `click` (if any), wait until the page's text contains
        every string of `wait_for`, save a PNG."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/json/new?about:blank", method="PUT")
        with urllib.request.urlopen(request, timeout=10) as response:
            target = json.load(response)
        with connect(target["webSocketDebuggerUrl"], max_size=None) as page:
            calls = iter(range(1, 1_000_000))

            def call(method: str, **params: object) -> dict:
                call_id = next(calls)
                page.send(json.dumps({"id": call_id, "method": method, "params": params}))
                while True:
                    message = json.loads(page.recv(timeout=30))
                    if message.get("id") == call_id:
                        if "error" in message:
                            raise RuntimeError(f"{method}: {message['error']}")
                        return message.get("result", {})

            call("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height, deviceScaleFactor=1, mobile=False)
            call("Page.navigate", url=url)
            if click is not None:
                find = (
                    "[...document.querySelectorAll('body *')]"
                    f".find(e => e.children.length === 0 && e.textContent.trim() === {json.dumps(click)})"
                )
                clicked = f"(() => {{ const e = {find}; if (e) e.click(); return !!e; }})()"
                self.wait_until(call, clicked, timeout, f"{url} showed no {click!r} tab to click")
            check = " && ".join(f"document.body.innerText.includes({json.dumps(text)})" for text in wait_for)
            self.wait_until(call, f"!!document.body && {check}", timeout, f"{url} did not show {wait_for}")
            time.sleep(SETTLE_SECONDS)
            data = call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        if path.stat().st_size > MAX_PNG_BYTES:
            raise SystemExit(f"{path} is over the repository's 1 MB limit; use a smaller --width/--height")


def main() -> None:
    parser = argparse.ArgumentParser(description="Screenshots of the Prefect UI showing a textmill run.")
    parser.add_argument("--corpus", type=Path, default=REPO / "seeds")
    parser.add_argument("--out-dir", type=Path, default=REPO / "docs")
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args()
    chromium = chromium_binary()
    with tempfile.TemporaryDirectory(prefix="textmill-ui-") as tmp:
        work = Path(tmp)
        env = bench_env(work / "prefect-home")
        env["PREFECT_UI_ENABLED"] = "true"
        with PrefectServer(work / "prefect-home", env, work / "server.log") as server:
            run_env = {**env, "PREFECT_API_URL": server.url, "PREFECT_LOGGING_LEVEL": "INFO"}
            out = work / "out"
            subprocess.run(
                # The corpus as the user would type it, so the summary names no machine's paths.
                [sys.executable, "-m", "textmill.flows.cli", "run", os.path.relpath(args.corpus, REPO), "--out", str(out)],
                env=run_env, cwd=REPO, check=True, timeout=600,
            )
            run_id = json.loads((out / "manifest.json").read_text(encoding="utf-8"))["run_id"]
            ui = server.url.removesuffix("/api")
            summary_id = artifact_id(server.url, run_id, "textmill-summary")
            args.out_dir.mkdir(parents=True, exist_ok=True)
            with HeadlessChromium(chromium, args.width, args.height) as browser:
                for name, (page, click, wait_for) in PAGES.items():
                    path = args.out_dir / name
                    url = f"{ui}/{page.format(run_id=run_id, summary_id=summary_id)}"
                    browser.screenshot(url, path, click, wait_for)
                    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
