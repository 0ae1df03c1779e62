"""The explorer in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``, selenium from the
dev group) drives the page served on 127.0.0.1 for two tiny checkpoints (LLaVA-1.5 with its patch-grid slider,
FasterVLM with its kept patches). Skipped, saying why, without Gradio, selenium or the browser; every wait is
bounded. ``TOKENCOMPOSE_SCREENSHOT=1`` also writes notebooks/explorer.png (the README's picture)."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from tests.explore.checkpoints import save_untrained
from tests.recipe_utils import REPO

gr = pytest.importorskip("gradio", reason="the explorer's `app` extra is not installed (uv sync --extra app)")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (dev group) is not installed")
CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).is_file()), None)
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                                reason="no headless browser: apt-get install -y chromium chromium-driver")

from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

WAIT_S = 60  # the longest any one step may take (a model answer on two busy cores)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from tokencompose.explore.app import launch
    from tokencompose.explore.session import Session

    folder = tmp_path_factory.mktemp("explore")
    sessions = [Session.open(save_untrained(REPO / "recipes/tiny/llava15.yaml", folder / "llava15" / "last.ckpt")),
                Session.open(save_untrained(REPO / "recipes/tiny/fastervlm.yaml", folder / "fastervlm" / "last.ckpt"))]
    app = launch(sessions, free_port(), block=False)
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,1900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S)
    try:
        yield app, driver
    finally:
        driver.quit()
        app.close()


def text(driver, elem_id: str) -> str:
    return driver.find_element(By.ID, elem_id).text


def test_upload_then_move_a_budget_slider_changes_the_tokens_and_the_answer(page, tmp_path):
    from tokencompose.explore.session import synthetic_examples

    app, driver = page
    assert app.server_name == "127.0.0.1"  # nothing listens beyond the loopback
    picture, question = synthetic_examples(1)[0]
    picture.save(tmp_path / "shapes.png")
    wait = WebDriverWait(driver, WAIT_S)
    driver.get(app.local_url)
    upload = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#picture input[type=file]"))[0]
    upload.send_keys(str(tmp_path / "shapes.png"))

    wait.until(lambda d: "visual tokens" in text(d, "tokens-0") and "visual tokens" in text(d, "tokens-1"))
    assert "64 visual tokens" in text(driver, "tokens-0")  # LLaVA-1.5 as trained: every patch of the 8x8 grid
    assert "16 visual tokens" in text(driver, "tokens-1")  # FasterVLM keeps 16 of 64
    before = text(driver, "answer-0")
    assert before.startswith("Answer:") and "TTFT" in before and "prefill" in before

    slider = driver.find_element(By.CSS_SELECTOR, "#knob-0-0 input[type=range]")
    for _ in range(7):  # patch grid 8 -> 1
        slider.send_keys(Keys.ARROW_LEFT)
    wait.until(lambda d: "1 visual tokens" in text(d, "tokens-0"))
    assert "patch.grid=1" in text(driver, "tokens-0")
    wait.until(lambda d: text(d, "answer-0").startswith("Answer:") and text(d, "answer-0") != before)
    after = text(driver, "answer-0")
    assert after != before  # at least its cost moved with the budget; the answer text may too

    shot = tmp_path / "explorer.png"
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("TOKENCOMPOSE_SCREENSHOT") == "1":
        shutil.copy(shot, REPO / "notebooks" / "explorer.png")
