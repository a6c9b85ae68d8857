"""``aot demo --serve`` end to end: one app server for the module (the ``aot`` command in a subprocess, the
tiny checkpoint, 8 frames), driven by headless Chromium through Selenium (skipped where Chromium or its
driver is not installed: ``apt-get install chromium chromium-driver``) and by ``gradio_client``, gradio's
own client. The figures the app shows and returns are checked against ``aot infer`` run as a subprocess
on the same video, question, compression and frame count.

``AOT_DEMO_SCREENSHOT=docs/demo.png`` makes the browser test save its page there (the README's picture).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("gradio_client", reason="the demo extra (gradio) is not installed")

from llava.resources import tasks_dir  # noqa: E402 - after the skip

AOT = str(Path(sys.executable).with_name("aot"))
FRAMES = 8
QUESTION = "How many squares move?"
CLIPS = tasks_dir() / "aot_smoke"
#: |kept / full - retention| allowed for ``<method>@<retention>``: the full sequence's one newline token
#: and the budget's rounding to whole tokens
RETENTION_TOL = 0.005
STARTUP_S = 120
WAIT_S = 90


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env() -> dict[str, str]:
    return {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The URL of one ``aot demo --serve`` (no --model: the tiny checkpoint on CPU), killed at the end."""
    folder = tmp_path_factory.mktemp("demo_server")
    port = _free_port()
    log_path = folder / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([AOT, "demo", "--serve", "--port", str(port), "--frames", str(FRAMES)], cwd=folder,
                                stdout=log, stderr=subprocess.STDOUT, env=_env())
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + STARTUP_S
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"aot demo --serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"aot demo --serve did not answer on {url} in {STARTUP_S} s:\n"
                            f"{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # SIGTERM ends the server as Ctrl-C does: the tiny checkpoint's temporary folder is gone with it
    served = re.search(r"serving (\S+) ", log_path.read_text())
    assert served and not Path(served.group(1)).exists(), log_path.read_text()[-2000:]


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    """``oracle(video, compression)``: what ``aot infer --json`` writes for the tiny checkpoint (the one
    ``aot tiny-checkpoint`` writes, which the app serves) on that video with :data:`QUESTION`."""
    folder = tmp_path_factory.mktemp("demo_oracle")
    ckpt = folder / "tiny"
    subprocess.run([AOT, "tiny-checkpoint", str(ckpt)], check=True, capture_output=True, env=_env(), timeout=120)
    done: dict[tuple[str, str], dict] = {}

    def run(video: Path, compression: str) -> dict:
        key = (str(video), compression)
        if key not in done:
            done[key] = aot_infer(ckpt, video, compression, folder / f"{len(done)}.json")
        return done[key]

    return run


def aot_infer(ckpt: Path, video: Path, compression: str, out: Path) -> dict:
    """What ``aot infer --json`` writes for ``ckpt`` on ``video`` with :data:`QUESTION` and :data:`FRAMES`."""
    proc = subprocess.run([AOT, "infer", "--model", str(ckpt), "--video", str(video), "--question", QUESTION,
                           "--compression", compression, "--max-frames", str(FRAMES), "--device", "cpu",
                           "--dtype", "float32", "--json", str(out)],
                          capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_a_missing_model_stops_before_serving(tmp_path):
    port = _free_port()
    proc = subprocess.run([AOT, "demo", "--serve", "--model", str(tmp_path / "no_such_ckpt"), "--port", str(port)],
                          capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"aot demo: error: --model {tmp_path / 'no_such_ckpt'}: no such checkpoint folder" in proc.stderr
    with socket.socket() as sock:  # nothing was served on the port
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_serve_options_without_serve_are_refused():
    proc = subprocess.run([AOT, "demo", "--model", "some/ckpt"], capture_output=True, text=True, env=_env(),
                          timeout=120)
    assert proc.returncode == 2
    assert "aot demo: error: --model is an option of aot demo --serve; expected --serve with it" in proc.stderr


# ------------------------------------------------------------------------------------------- gradio_client


def test_compare_endpoint_returns_what_aot_infer_prints(server, oracle, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from llava.video import write_synthetic_video

    video = write_synthetic_video(tmp_path / "unseen.mp4", frames=2 * FRAMES, seed=7)
    client = Client(server, verbose=False)
    out = client.predict(handle_file(str(video)), QUESTION, "none", "aot@0.25", api_name="/compare")
    figures = out[-1]
    assert set(figures) == {"a", "b"}
    a, b = figures["a"], figures["b"]
    for entry in (a, b):
        assert {"answer", "visual_tokens", "visual_tokens_plain", "retention", "ttft_ms"} <= set(entry)
        assert entry["ttft_ms"] > 0 and entry["frames"] == FRAMES
    assert a["compression"] == "none" and b["compression"] == "aot@0.25"
    assert a["visual_tokens"] == a["visual_tokens_plain"] == b["visual_tokens_plain"]
    assert abs(b["visual_tokens"] / a["visual_tokens"] - 0.25) <= RETENTION_TOL
    assert b["retention"] == pytest.approx(0.25, abs=RETENTION_TOL)
    for entry, compression in ((a, "none"), (b, "aot@0.25")):
        expected = oracle(video, compression)
        for key in ("answer", "family", "visual_tokens", "visual_tokens_plain", "retention", "stage_tokens",
                    "frames", "frames_sampled", "output_tokens"):
            assert entry[key] == expected[key], (compression, key)
    # the page's other outputs: both answers and both overlay PNGs
    assert out[0] == a["answer"] and out[3] == b["answer"]
    for png in (out[2], out[5]):
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    not_video = tmp_path / "notes.mp4"
    not_video.write_text("plain text, not a video\n")
    with pytest.raises(AppError, match="notes.mp4 is not a video this app can read"):
        client.predict(handle_file(str(not_video)), QUESTION, "none", "aot@0.25", api_name="/compare")
    with pytest.raises(AppError, match="unknown compression preset 'no_such_preset'"):
        client.predict(handle_file(str(video)), QUESTION, "none", "no_such_preset", api_name="/compare")
    again = client.predict(handle_file(str(video)), QUESTION, "pool@0.25", "none", api_name="/compare")[-1]
    assert again["b"]["visual_tokens"] == a["visual_tokens"]
    assert again["a"]["visual_tokens"] < a["visual_tokens"] and again["a"]["compression"] == "pool@0.25"


# ------------------------------------------------------------------------------------------- the browser


def _browser_paths() -> tuple[str, str] | None:
    binary = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    return (binary, driver) if binary and driver else None


@pytest.fixture(scope="module")
def browser():
    paths = _browser_paths()
    if paths is None:
        pytest.skip("no Chromium and chromedriver: apt-get install chromium chromium-driver "
                    "(bash scripts/setup.sh does it as root when CI or AOT_INSTALL_BROWSER=1 is set)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1700"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(paths[1]), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, condition, what: str, timeout: float = WAIT_S):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)
    except TimeoutException:
        body = driver.find_element("tag name", "body").text
        pytest.fail(f"timed out after {timeout} s waiting for {what}; the page says:\n{body[-2000:]}")


def _open(driver, url: str) -> None:
    driver.get(url)
    _wait(driver, lambda d: d.find_elements("id", "run"), "the page to load")


def _text(driver, elem_id: str) -> str:
    return driver.find_element("id", elem_id).get_attribute("textContent")


def _pick_clip(driver, name: str) -> None:
    """Choose a bundled clip in the dropdown, then wait for the video field to hold it."""
    from selenium.webdriver.common.action_chains import ActionChains

    driver.find_element("css selector", "#clip input").click()
    options = _wait(driver, lambda d: d.find_elements("css selector", "li[role=option]"), "the clip list")
    option = next(o for o in options if o.get_attribute("aria-label") == name)
    ActionChains(driver).move_to_element(option).click().perform()
    stem = Path(name).stem
    _wait(driver, lambda d: stem in _text(d, "video"), f"{name} in the video field")


def _type_compression(driver, elem_id: str, value: str) -> None:
    from selenium.webdriver.common.keys import Keys

    field = driver.find_element("css selector", f"#{elem_id} input")
    field.click()
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(value, Keys.ENTER)
    _wait(driver, lambda d: field.get_attribute("value") == value, f"{elem_id} = {value}")


def _ask(driver, question: str) -> None:
    box = driver.find_element("css selector", "#question textarea")
    box.clear()
    box.send_keys(question)


def _results(driver) -> dict[str, dict]:
    """Wait for both answers and both overlay images, then read what the page shows per setting."""
    out = {}
    for key in ("a", "b"):
        answer = _wait(driver, lambda d, k=key: d.find_element("css selector", f"#answer_{k} textarea")
                       .get_attribute("value"), f"answer {key.upper()}")
        _wait(driver, lambda d, k=key: d.execute_script(
            f"const i = document.querySelector('#tokens_{k} img'); return i && i.complete && i.naturalWidth > 0;"),
            f"the overlay image {key.upper()}")
        stats = _text(driver, f"stats_{key}")
        tokens = re.search(r"visual tokens\s*(\d+)\s*→\s*(\d+)", stats)
        retention = re.search(r"retention\s*([0-9.]+)", stats)
        ttft = re.search(r"TTFT ms\s*([0-9.]+)", stats)
        assert tokens and retention and ttft, stats
        out[key] = {"answer": answer, "visual_tokens_plain": int(tokens[1]), "visual_tokens": int(tokens[2]),
                    "retention": retention[1], "ttft_ms": float(ttft[1]), "stats": stats}
    return out


def test_page_runs_a_bundled_clip_and_shows_aot_infer_figures(server, browser, oracle):
    _open(browser, server)
    assert browser.title == "AOT demo"
    assert "AOT: what a compression keeps" in browser.find_element("tag name", "body").text
    _pick_clip(browser, "two_squares.mp4")
    _ask(browser, QUESTION)
    _type_compression(browser, "compression_b", "aot@0.25")
    browser.find_element("id", "run").click()
    shown = _results(browser)
    for key, compression in (("a", "none"), ("b", "aot@0.25")):
        expected = oracle(CLIPS / "two_squares.mp4", compression)
        got = shown[key]
        assert got["visual_tokens_plain"] == expected["visual_tokens_plain"], (compression, got["stats"])
        assert got["visual_tokens"] == expected["visual_tokens"], (compression, got["stats"])
        assert got["retention"] == f"{expected['retention']:.4f}", (compression, got["stats"])
        assert got["ttft_ms"] > 0
        assert compression in got["stats"]
    if os.environ.get("AOT_DEMO_SCREENSHOT"):
        Path(os.environ["AOT_DEMO_SCREENSHOT"]).parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(os.environ["AOT_DEMO_SCREENSHOT"])


def test_page_shows_the_error_of_a_non_video_and_serves_the_next_request(server, browser, tmp_path):
    not_video = tmp_path / "notes.txt"
    not_video.write_text("plain text, not a video\n")
    _open(browser, server)
    browser.find_element("css selector", "#video button[aria-label='Clear']").click()
    upload = _wait(browser, lambda d: d.find_elements("css selector", "#video input[type=file]"), "the upload field")
    upload[0].send_keys(str(not_video))
    _wait(browser, lambda d: "notes" in _text(d, "video"), "the uploaded file in the video field")
    browser.find_element("id", "run").click()
    toast = _wait(browser, lambda d: [t for t in d.find_elements("css selector", ".toast-body")
                                      if "is not a video" in t.text], "the error message")
    assert "notes.txt is not a video this app can read; expected a video file such as .mp4" in toast[0].text
    assert not browser.find_element("css selector", "#answer_a textarea").get_attribute("value")
    _pick_clip(browser, "blue_left.mp4")
    browser.find_element("id", "run").click()
    shown = _results(browser)
    assert shown["a"]["visual_tokens"] == shown["a"]["visual_tokens_plain"] == shown["b"]["visual_tokens_plain"]
    assert shown["b"]["visual_tokens"] < shown["a"]["visual_tokens"]  # paper_ov_10pct, the page's default B


def test_a_qwen_checkpoint_is_loaded_once_and_answers_as_aot_infer(tmp_path):
    """``aot demo --serve --model <a Qwen2.5-VL checkpoint>``'s action, in process: the checkpoint is loaded
    once (the family's ``load``) and both settings of two clicks answer with the figures of ``aot infer``."""
    from llava.demo_app import compare, open_model
    from llava.fixtures.tiny_qwen2_5_vl import write_tiny_qwen2_5_vl

    ckpt = write_tiny_qwen2_5_vl(tmp_path / "qwen")
    model = open_model(str(ckpt), device="cpu", max_frames=FRAMES)
    assert model.family.name == "qwen2_5_vl" and model.family.load is not None
    model.load()
    loaded = model._loaded
    video = CLIPS / "two_squares.mp4"
    for click in range(2):
        entry_a, png_a, entry_b, png_b = compare(model, str(video), QUESTION, "none", "aot@0.25",
                                                 out_dir=tmp_path / f"click{click}")
        assert model._loaded is loaded  # not loaded again
        assert png_a.is_file() and png_b.is_file()
    for entry, compression in ((entry_a, "none"), (entry_b, "aot@0.25")):
        want = aot_infer(ckpt, video, compression, tmp_path / f"infer_{compression.replace('@', '_')}.json")
        for key in ("answer", "visual_tokens", "visual_tokens_plain", "retention", "stage_tokens", "output_tokens"):
            assert entry[key] == want[key], (compression, key)
    # 36 tokens: the budget is 9, and with one clip per temporal token the release's double keyframe
    # emission makes the count even (docs/methods.md): 8 or 10, one token (0.028) off a quarter
    assert entry_a["visual_tokens"] == 36 and abs(entry_b["visual_tokens"] - 9) == 1
