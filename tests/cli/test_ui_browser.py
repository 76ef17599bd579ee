"""The MLflow UI and the report, as a user sees them: headless Chromium (Selenium + Debian's chromium-driver).

`lensearch ui` serves the store of the shared tiny real search (``report_search``); the browser follows the
link it prints, finds the trials (flat, ranked, in the machine-learning view, not the GenAI traces page),
opens the best trial's metrics and its sample grid. The report built from the same search is opened from
disk: every image decodes and every link resolves. Skipped only where Chromium or its driver is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lensearch.cli import main
from helpers import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                       reason="headless Chromium is not installed (apt-get install chromium chromium-driver)"),
]


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[test])")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1600,1000", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, what, timeout=60.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.5).until(lambda d: what(d))


def _text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def _wait_text(driver, *needles: str) -> str:
    """The page's text once it contains every one of ``needles``."""
    return _wait(driver, lambda d: (lambda t: t if all(n in t for n in needles) else None)(_text(d)))


@pytest.fixture
def ui(report_search, tmp_path):
    """`lensearch ui` on the search's store, on a free port; yields (base URL, the links it printed)."""
    store = report_search.search_dir.parents[1]
    port = free_port()
    log = tmp_path / "ui.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "lensearch", "ui", "--store", str(store), "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2).close()
                break
            except OSError:
                assert proc.poll() is None, f"the UI exited: {log.read_text()[-2000:]}"
                assert time.time() < deadline, "the UI did not answer within 90 s"
                time.sleep(0.5)
        links = dict(re.findall(r"search experiment '([^']+)': (\S+)", log.read_text()))
        yield base, links
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the UI and the server workers it started
        proc.wait(timeout=30)


def test_the_mlflow_ui_shows_the_trials_their_metrics_and_sample_grids(report_search, ui, browser, tmp_path):
    from selenium.webdriver.common.by import By

    base, links = ui
    client = MlflowClient(report_search.tracking_uri)
    parent = client.get_run(report_search.parent_run_id)
    exp_id = parent.info.experiment_id
    assert client.get_experiment(exp_id).tags["mlflow.experimentKind"] == "custom_model_development"
    url = links["rep"]
    assert url.startswith(f"{base}/#/experiments/{exp_id}/runs?workflowType=machine_learning")
    trials = client.search_runs([exp_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}' "
                                "and tags.`lensearch.kind` = 'trial'")  # not a registered export's run
    assert len(trials) == 3
    ranked = [r.info.run_name for r in sorted(trials, key=lambda r: -r.data.metrics["val_psnr"])]

    # The printed link opens the runs table (not the traces dashboard) with every trial listed, best first.
    browser.get(url)
    text = _wait_text(browser, *ranked)
    assert "matching runs" in text and "No data available for the selected time range" not in text
    positions = [text.index(n) for n in ranked]
    assert positions == sorted(positions), (ranked, text[:1500])
    assert "tiny/train" in text or "tiny/val" in text  # the dataset column (mlflow.log_input)
    browser.save_screenshot(str(tmp_path / "runs.png"))

    # The best trial: its metrics, as MLflow stores them, on its page.
    best = max(trials, key=lambda r: r.data.metrics["val_psnr"])
    browser.find_element(By.LINK_TEXT, best.info.run_name).click()
    text = _wait_text(browser, "val_ssim", "Parent run\nrep\n")  # the search as parent, once its name loaded
    for metric in ("val_psnr", "val_ssim", "val_gap_closed"):
        assert metric in text, metric
    shown = re.search(r"val_psnr\n([0-9.]+)", text)
    assert shown and float(shown.group(1)) == pytest.approx(best.data.metrics["val_psnr"], rel=1e-3)
    browser.save_screenshot(str(tmp_path / "trial.png"))

    # Its sample grid: the artifact is listed, and the image the UI shows decodes at the PNG's width.
    from PIL import Image

    sample = Path(report_search.search_dir / "trials" / best.data.tags["lensearch.trial_id"] / "samples.png")
    width = Image.open(sample).width
    browser.find_element(By.XPATH, "//*[@role='tab' or self::button][normalize-space()='Artifacts']").click()
    _wait(browser, lambda d: d.find_elements(By.XPATH, "//*[normalize-space(text())='samples.png']"))
    browser.find_element(By.XPATH, "//*[normalize-space(text())='samples.png']").click()
    widths = _wait(browser, lambda d: [w for w in d.execute_script(
        "return Array.from(document.images).filter(i => i.complete && i.src.startsWith('blob:'))"
        ".map(i => i.naturalWidth)") if w] or None)
    assert width in widths, (width, widths)
    browser.save_screenshot(str(tmp_path / "samples.png"))
    assert (tmp_path / "samples.png").stat().st_size > 10_000


def test_the_report_opens_with_every_figure_loaded_and_no_broken_link(report_search, tiny_h5, browser, tmp_path):
    from selenium.webdriver.common.by import By

    out = tmp_path / "report"
    assert main(["report", str(report_search.search_dir), "--out", str(out),
                 "--store", str(report_search.search_dir.parents[1]), "--data", str(tiny_h5)]) == 0
    browser.get((out / "report.html").as_uri())
    _wait(browser, lambda d: d.execute_script("return document.readyState") == "complete")
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
    assert len(images) >= 8
    broken = [src for src, complete, width in images if not (complete and width > 0)]
    assert not broken, broken
    hrefs = [a.get_attribute("href") for a in browser.find_elements(By.TAG_NAME, "a")]
    for href in filter(None, hrefs):
        if href.startswith("file://"):
            target = Path(urllib.request.url2pathname(href.split("#")[0][len("file://"):]))
            assert target.is_file(), href
        else:
            assert href.startswith(("http://", "https://", "mailto:")) or href.startswith("#"), href
    browser.save_screenshot(str(tmp_path / "report.png"))
