"""The dashboard in real headless Chromium: a table's count follows writes made by
another process, and the screenshot is not blank.

It needs Debian's ``chromium`` and ``chromium-driver``; tests never install anything, so
``.ci/run`` installs them under ``CI=true``. Without them the test fails under ``CI=true``
and is skipped elsewhere, printing the command that installs them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gwbrowser import blankness, make_driver, require_chromium
from gwutil import Gateway

WRITER = """
import sys
from stateengine.client.client import Client
with Client(data_dir=sys.argv[1], timeout=10) as c:
    for i in range(5):
        c.create_record("b_live", {"job": f"late-{i}", "rows": i * 100})
"""


@pytest.fixture(scope="session")
def chromium() -> None:
    try:
        require_chromium()
    except RuntimeError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires chromium and chromedriver: {exc}")
        pytest.skip(str(exc))


@pytest.fixture
def driver(chromium: None, tmp_path: Path) -> Iterator[Any]:
    drv = make_driver(tmp_path / "profile")
    try:
        drv.set_page_load_timeout(30)
        yield drv
    finally:
        drv.quit()


def test_dashboard_counts_follow_writes_from_another_process(
    gateway: Gateway, driver: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    http = gateway.http
    for i in range(2):
        r = http.post("/api/states/b_live/records", json={"job": f"early-{i}", "rows": i})
        assert r.status_code == 201
    driver.get(gateway.info.login_url)  # as printed at start: the token becomes a cookie
    assert driver.current_url == gateway.url  # and leaves the address bar
    wait = WebDriverWait(driver, 20, poll_frequency=0.1)
    count = '#tables tr[data-table="b_live"] .count'

    def shown(drv: Any) -> str | None:
        cells = drv.find_elements(By.CSS_SELECTOR, count)
        return cells[0].text if cells else None

    wait.until(lambda d: shown(d) == "2")
    wait.until(lambda d: d.find_element(By.ID, "feed-status").text == "live")
    subprocess.run([sys.executable, "-c", WRITER, str(gateway.data_dir)], check=True, timeout=60)
    wait.until(lambda d: shown(d) == "7")
    # The records panel shows the selected table (the first one) with the new rows.
    driver.find_element(By.CSS_SELECTOR, '#tables tr[data-table="b_live"]').click()
    wait.until(lambda d: "late-4" in d.find_element(By.ID, "records").text)
    wait.until(lambda d: d.find_element(By.ID, "stat-arena").text != "–")
    png = driver.get_screenshot_as_png()
    (tmp_path / "dashboard.png").write_bytes(png)
    colours, busy = blankness(png)
    assert colours >= 16 and busy >= 0.02, (colours, busy)
