"""Debian's headless Chromium through chromium-driver, as the browser tests and the console benchmark drive it.

`make test` installs chromium, chromium-driver and python3-selenium.
"""
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def headless(browser_log=False):
    """A new headless Chromium, 1300 x 1100. browser_log: keep the page's console messages (for CSP checks)."""
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1300,1100",
              "--disable-gpu", "--no-first-run", "--disable-extensions"):
        opts.add_argument(a)
    if browser_log:
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
