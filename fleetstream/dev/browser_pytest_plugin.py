"""A pytest fixture that gives a test a headless Chromium (`fleetstream.dev.chromium`).

Load with `pytest_plugins = ["fleetstream.dev.browser_pytest_plugin"]`.

* `chromium_driver`: a fresh Selenium WebDriver of headless Chromium for one test, quit
  afterwards (the user data folder is its own, so no cookies or cache are shared).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import pytest

from fleetstream.dev.chromium import headless_chromium

if TYPE_CHECKING:
    from selenium.webdriver import Chrome


@pytest.fixture
def chromium_driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chrome]:
    """Headless Chromium under Selenium, for this test only."""
    driver = headless_chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()
