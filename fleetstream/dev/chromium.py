"""Headless Chromium for tests that look at a page as a person would (the dashboard's).

Not a server: `headless_chromium()` installs Debian's `chromium` and `chromium-driver` when
`/usr/bin/chromium` or `/usr/bin/chromedriver` is missing (as `rabbitmq` does), and returns
a Selenium WebDriver of a fresh headless Chromium, with the browser console kept so that a
test can read its errors:

    driver = headless_chromium(Path(tempfile.mkdtemp(prefix="chromium-")))
    try:
        driver.get("http://127.0.0.1:8092/")
        errors = console_errors(driver)
    finally:
        driver.quit()

Selenium is a test dependency (`pip install -e .[test]`); Selenium Manager is never asked
to download a browser or a driver: the Debian ones are named explicitly.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetstream.dev.service import ServiceError, apt_install

if TYPE_CHECKING:
    from selenium.webdriver import Chrome

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def install_chromium() -> None:
    """Install Debian's Chromium and its WebDriver when either is missing."""
    if not CHROMIUM.exists():
        apt_install("chromium", "chromium")
    if not CHROMEDRIVER.exists():
        apt_install("chromium", "chromium-driver")


def headless_chromium(profile: Path, width: int = 1400, height: int = 1000) -> Chrome:
    """A new headless Chromium under Selenium, its user data in the folder `profile` (no
    cookies nor cache shared with another); `quit()` it when done."""
    install_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--no-first-run", "--disable-extensions",
                     f"--window-size={width},{height}",
                     f"--user-data-dir={profile}"):
        options.add_argument(argument)
    # keep every console message for console_errors()
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        return webdriver.Chrome(options=options,
                                service=DriverService(executable_path=str(CHROMEDRIVER)))
    except Exception as error:   # selenium's WebDriverException and OS errors alike
        raise ServiceError(f"chromium: headless Chromium did not start: {error}") from error


def console_messages(driver: Chrome) -> list[dict[str, Any]]:
    """The browser console's messages since the last call (level, message, timestamp)."""
    return list(driver.get_log("browser"))


def console_errors(driver: Chrome) -> list[str]:
    """The console's errors (SEVERE) since the last call: script errors, failed loads,
    Content-Security-Policy refusals."""
    return [entry["message"] for entry in console_messages(driver)
            if entry.get("level") == "SEVERE"]
