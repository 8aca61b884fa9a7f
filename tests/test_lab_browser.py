"""The live book: chapter 7 in JupyterLab, run by a real browser, and its Train button pressed.

``make lab`` is started by the test (on a free port, no token, with JupyterLab's
app exposed to the page's JavaScript), Debian's Chromium is driven headless by
its ChromeDriver through selenium, the chapter is opened and all its cells run,
then **Train** is pressed and the test waits until the panel shows a different
result (its text or its figures change) with the button usable again and no
failure shown. Needs ``apt-get install chromium chromium-driver`` (``.ci/run``
installs them). Run with ``make test-lab`` (marker ``lab``).

The assertions are about the widget's behaviour (a shown result that changes
after Train), not about its exact wording, which the chapter may change.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = "notebooks/07_interactive_ablations.ipynb"
# Chromium in this environment: no GPU, no sandbox (root), no network of its own
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
START_S, RUN_CELLS_S, TRAIN_S = 180, 420, 600  # generous: a 2-core CPU shared with other work


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} not found: the JupyterLab browser test needs Debian's chromium and chromium-driver "
            "(apt-get install chromium chromium-driver)"
        )
    return path


@pytest.fixture(scope="module")
def lab_url(tmp_path_factory):
    """``make lab`` on a free port; yields its base URL; stops it (its whole process group) after."""
    tmp = tmp_path_factory.mktemp("lab")
    port = _free_port()
    venv = Path(sys.prefix)
    args = (
        f"--no-browser --ip=127.0.0.1 --port={port} --IdentityProvider.token= --ServerApp.password= "
        f"--LabApp.expose_app_in_browser=True --LabApp.workspaces_dir={tmp / 'workspaces'}"
    )
    # the test must leave the chapter as committed (no outputs): no autosave, checkpoints outside the project
    settings = tmp / "settings" / "@jupyterlab" / "docmanager-extension"
    settings.mkdir(parents=True)
    (settings / "plugin.jupyterlab-settings").write_text('{"autosave": false}')
    args += f" --FileCheckpoints.checkpoint_dir={tmp / 'checkpoints'}"
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp / "config"),
        "JUPYTER_DATA_DIR": str(tmp / "data"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp / "settings"),
        "HF_HUB_OFFLINE": "1",
    }
    log = open(tmp / "lab.log", "w")  # noqa: SIM115 - closed below
    # -o: use the installed environment as it is (make test / make setup made it)
    proc = subprocess.Popen(
        ["make", "-s", "-o", f"{venv}/.awm-installed", "lab", f"VENV={venv}", f"LAB_ARGS={args}"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"make lab exited with {proc.returncode}:\n{(tmp / 'lab.log').read_text()[-3000:]}"
                )
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{url}/api/status", timeout=5) as r:
                    if r.status == 200:
                        break
            if time.time() > deadline:
                pytest.fail(
                    f"JupyterLab did not answer within {START_S} s:\n{(tmp / 'lab.log').read_text()[-3000:]}"
                )
            time.sleep(1)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium must not look for drivers online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = _tool("chromium")
    for flag in CHROME_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")  # new and empty
    opts.add_argument("--window-size=1400,1000")
    driver = webdriver.Chrome(service=Service(_tool("chromedriver")), options=opts)
    driver.set_script_timeout(RUN_CELLS_S)
    yield driver
    driver.quit()


def _wait(what: str, timeout: float, check, every: float = 1.0):
    deadline = time.time() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.time() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


NOTEBOOK_STATE = """
const app = window.jupyterapp;
const w = app && app.shell.currentWidget;
if (!w || !w.context || !w.context.path.endsWith(arguments[0]) || !w.sessionContext.session) return null;
const kernel = w.sessionContext.session.kernel;
const cells = w.content.widgets.filter(c => c.model.type === 'code');
return {kernel: kernel ? kernel.status : null,
        counts: cells.map(c => c.model.executionCount),
        errors: cells.flatMap(c => c.model.outputs.toJSON().filter(o => o.output_type === 'error')
                                          .map(o => o.ename + ': ' + o.evalue))};
"""

PANEL_STATE = """
const btn = arguments[0];
const area = btn.closest('.jp-OutputArea-output') || btn.parentElement.parentElement;
const imgs = Array.from(area.querySelectorAll('img')).filter(i => i.offsetParent !== null && i.src)
                  .map(i => i.src.length + ':' + i.src.slice(-48));
return {text: area.innerText, imgs: imgs, disabled: btn.disabled};
"""


def test_chapter_7_runs_in_jupyterlab_and_train_changes_the_shown_result(lab_url, browser, tmp_path):
    from selenium.webdriver.common.by import By

    name = Path(CHAPTER).name
    committed = (ROOT / CHAPTER).read_bytes()
    checkpoint = ROOT / "notebooks" / ".ipynb_checkpoints" / f"{Path(CHAPTER).stem}-checkpoint.ipynb"
    had_checkpoint = checkpoint.exists()
    browser.get(f"{lab_url}/lab/tree/{CHAPTER}?reset")
    _wait(
        "the chapter to open with a kernel",
        START_S,
        lambda: (s := browser.execute_script(NOTEBOOK_STATE, name)) and s["kernel"] in ("idle", "busy"),
    )
    browser.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")

    def finished():
        s = browser.execute_script(NOTEBOOK_STATE, name)
        return s if s and s["kernel"] == "idle" and all(c is not None for c in s["counts"]) else None

    state = _wait("every cell of the chapter to run", RUN_CELLS_S, finished, every=2)
    browser.save_screenshot(str(tmp_path / "after-run-all.png"))
    assert not state["errors"], f"the chapter raised in JupyterLab: {state['errors']}"

    buttons = _wait(
        "the panel's Train button",
        60,
        lambda: [
            b
            for b in browser.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel button")
            if "train" in b.text.lower()
        ],
    )
    button = buttons[0]
    before = browser.execute_script(PANEL_STATE, button)
    assert not before["disabled"], "Train is disabled before anything ran"
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
    button.click()

    history = []

    def settled():
        s = browser.execute_script(PANEL_STATE, button)
        history.append(s)
        changed = s["text"] != before["text"] or s["imgs"] != before["imgs"]
        stable = len(history) >= 3 and history[-1] == history[-2] == history[-3]
        return s if changed and stable and not s["disabled"] else None

    after = _wait("the panel to show a new result after Train", TRAIN_S, settled, every=2)
    browser.save_screenshot(str(tmp_path / "after-train.png"))
    assert "failed" not in after["text"].lower(), after["text"][-800:]
    new_lines = [ln for ln in after["text"].splitlines() if ln.strip() and ln not in before["text"]]
    assert new_lines or after["imgs"] != before["imgs"], "nothing in the panel changed after Train"
    final = browser.execute_script(NOTEBOOK_STATE, name)
    assert not final["errors"], final["errors"]
    assert (ROOT / CHAPTER).read_bytes() == committed, (
        "running the chapter in JupyterLab changed the notebook file"
    )
    assert checkpoint.exists() == had_checkpoint, "JupyterLab wrote a checkpoint into the project"
