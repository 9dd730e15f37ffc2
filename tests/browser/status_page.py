#!/usr/bin/python3
"""The status page in a real headless browser (Chromium through Selenium), driven by
tests/status_page.rs over stdin and stdout.

    status_page.py [--token TOKEN] URL ADDRESS...

URL is the admin listener's `/`; ADDRESS... are every backend the page must show. One command
per stdin line, one answer per stdout line:

    (start)               -> READY          the page shows every ADDRESS as healthy; with
                                            --token, first: without the token the page asks for
                                            one, `/?token=` works, and a reload keeps it
    EXPECT ADDR STATE     -> SEEN {json}    within 5 s ADDR's row shows STATE (and, when not
                                            healthy, is listed under "Needs attention"); json:
                                            the row's figures and how long it took
    LATENCY ADDR LO HI    -> LATENCY {json} within 6 s ADDR's p50 reads between LO and HI ms
    RELOADED GENERATION   -> RELOADED text  within 5 s the page shows GENERATION and the last
                                            reload as ok; text: what it says of that reload
    CHECK                 -> CHECKED        screenshots (when $SLUICE_SCREENSHOT names a file; a
                                            phone's with $SLUICE_SCREENSHOT_PHONE),
                                            nothing overflows at 390 px (cards) or 1200 px, and
                                            no console message at WARNING or SEVERE so far
    GONE                  -> OK             sluice has stopped: within 6 s the page says it is
                                            not reachable, and the console holds only the
                                            browser's own notes of the failed requests

Any failure prints `FAIL reason` and what the page showed, and exits 1. A missing Selenium or
browser exits 2 with the reason.
"""

import json
import os
import queue
import sys
import threading
import time

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def say(*words):
    print(*words, flush=True)


def fail(reason, driver=None):
    say("FAIL", reason)
    if driver is not None:
        try:
            say("PAGE", json.dumps(driver.execute_script("return document.body.innerText")))
            say("LOGS", json.dumps(driver.get_log("browser")))
        except Exception as e:  # the browser itself may be the problem
            say("PAGE unavailable:", repr(e))
    sys.exit(1)


try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
except ImportError as e:
    say("FAIL Selenium is missing (Debian: apt-get install python3-selenium; .ci/run installs it):", e)
    sys.exit(2)

for path in (CHROMIUM, CHROMEDRIVER):
    if not os.access(path, os.X_OK):
        say(f"FAIL {path} is missing (Debian: apt-get install chromium chromium-driver; .ci/run installs them)")
        sys.exit(2)


def start_browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1200,900", "--no-first-run", "--disable-extensions",
                "--force-prefers-reduced-motion", "--lang=en-US"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


# Commands from the test, read on a thread of their own so that a test that gives up (closes
# stdin) ends the script, and its browser, even while it is waiting for the page.
commands = queue.Queue()
stdin_closed = threading.Event()


def read_commands():
    for line in sys.stdin:
        commands.put(line)
    stdin_closed.set()
    commands.put(None)


def wait_for(what, timeout, check, driver):
    """Polls `check` (returning a true value when done) until `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        if stdin_closed.is_set():
            fail(f"the test gave up while waiting for {what}", driver)
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            fail(f"{what} not seen within {timeout} s", driver)
        time.sleep(0.05)


ROWS_JS = """
return Array.from(document.querySelectorAll('tr[data-backend]')).map(tr => {
  const field = name => { const e = tr.querySelector('[data-field="' + name + '"]');
                          return e ? e.textContent.trim() : null; };
  const box = tr.getBoundingClientRect();
  const listed = document.querySelector('#attention:not([hidden]) li[data-backend="' + tr.dataset.backend + '"]');
  return { addr: tr.dataset.backend, state: tr.dataset.state, badge: field('state'),
           rps: field('rps'), errors: field('errors'), p50: field('p50'), p99: field('p99'),
           check: field('check-detail'), listed: listed !== null,
           visible: box.width > 0 && box.height > 0 };
});
"""


def rows(driver):
    return {r["addr"]: r for r in driver.execute_script(ROWS_JS)}


def shows(driver, addr, state):
    """ADDR's row in STATE, said in words (not only by colour), and listed under "Needs
    attention" unless healthy."""
    row = rows(driver).get(addr)
    if row is None or not row["visible"] or row["state"] != state:
        return None
    if (row["badge"] or "").lower() != state:
        return None
    if (state != "healthy") != row["listed"]:
        return None
    return row


def millis(text):
    """`38 ms` or `1.20 s` as milliseconds; None for the dash."""
    if not text or text == "\u2014":
        return None
    number, unit = text.split()
    return float(number) * (1000 if unit == "s" else 1)


def severe_logs(driver, allow=lambda entry: False):
    return [e for e in driver.get_log("browser")
            if e["level"] in ("SEVERE", "WARNING") and not allow(e)]


def ask_for_token(driver, url, token):
    """Without the token the page explains that one is needed; `/?token=` shows the data, takes
    the token out of the address bar, and a reload of the page keeps it (session storage)."""
    driver.get(url)
    wait_for("the token request", 5, lambda: driver.execute_script(
        "const a = document.getElementById('auth');"
        "return !a.hidden && a.innerText.includes('token') && document.getElementById('overview').hidden;"),
        driver)
    # The one message expected: the browser's own note of the 401 answer.
    unexpected = severe_logs(driver, allow=lambda e: "/api/status" in e["message"] and "401" in e["message"])
    if unexpected:
        fail(f"console messages while asking for the token: {unexpected}", driver)
    driver.get(url + "?token=" + token)
    overview = "return !document.getElementById('overview').hidden"
    wait_for("the data with ?token=", 5, lambda: driver.execute_script(overview), driver)
    if "token" in driver.current_url:
        fail(f"the token stays in the address bar: {driver.current_url}", driver)
    driver.refresh()
    wait_for("the data after a reload (token kept)", 5, lambda: driver.execute_script(overview), driver)


def overflow(driver, width):
    """What sticks out horizontally at `width` CSS pixels, or None."""
    return driver.execute_script("""
      const width = window.innerWidth;
      if (width !== arguments[0]) return 'viewport is ' + width + ' px, not ' + arguments[0];
      if (document.documentElement.scrollWidth > width)
        return 'page is ' + document.documentElement.scrollWidth + ' px wide';
      for (const e of document.querySelectorAll('body *')) {
        const box = e.getBoundingClientRect();
        if (box.width > 0 && box.right > width + 0.5)
          return e.tagName + '.' + e.className + ' ends at ' + box.right + ' px: ' + e.textContent.slice(0, 60);
      }
      return null;
    """, width)


def set_viewport(driver, width, height, mobile):
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})


def check_layouts(driver, addresses):
    # A phone: every backend a card (no table header), every one visible, nothing overflowing.
    set_viewport(driver, 390, 844, True)
    phone = os.environ.get("SLUICE_SCREENSHOT_PHONE")
    if phone:
        height = driver.execute_script("return document.documentElement.scrollHeight")
        set_viewport(driver, 390, int(height), True)
        driver.save_screenshot(phone)
        set_viewport(driver, 390, 844, True)
    problem = overflow(driver, 390)
    if problem:
        fail(f"at 390 px: {problem}", driver)
    cards = driver.execute_script(
        "return Array.from(document.querySelectorAll('thead')).every(t => getComputedStyle(t).display === 'none')")
    if not cards:
        fail("at 390 px the backends are still a table", driver)
    hidden = [a for a in addresses if not rows(driver).get(a, {}).get("visible")]
    if hidden:
        fail(f"at 390 px these backends are not shown: {hidden}", driver)
    # A wide screen: a table per pool.
    set_viewport(driver, 1200, 900, False)
    problem = overflow(driver, 1200)
    if problem:
        fail(f"at 1200 px: {problem}", driver)
    tables = driver.execute_script(
        "return Array.from(document.querySelectorAll('thead')).every(t => getComputedStyle(t).display !== 'none')")
    if not tables:
        fail("at 1200 px the backends are not a table", driver)
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def screenshot(driver, path):
    height = driver.execute_script("return document.documentElement.scrollHeight")
    set_viewport(driver, 1200, int(height), False)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    set_viewport(driver, 1200, int(height), False)
    if not driver.save_screenshot(path):
        fail(f"could not write the screenshot {path}", driver)
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def main():
    args = sys.argv[1:]
    token = None
    if args[:1] == ["--token"]:
        token, args = args[1], args[2:]
    if len(args) < 2:
        say("FAIL usage: status_page.py [--token TOKEN] URL ADDRESS...")
        sys.exit(2)
    url, addresses = args[0], args[1:]

    threading.Thread(target=read_commands, daemon=True).start()
    driver = start_browser()
    try:
        if token is not None:
            ask_for_token(driver, url, token)
        else:
            driver.get(url)
        wait_for("every backend healthy", 15,
                 lambda: all(shows(driver, a, "healthy") for a in addresses), driver)
        say("READY")

        while (line := commands.get()) is not None:
            words = line.split()
            if not words:
                continue
            command = words[0]
            if command == "EXPECT":
                addr, state = words[1], words[2]
                started = time.monotonic()
                row = wait_for(f"{addr} shown {state}", 5, lambda: shows(driver, addr, state), driver)
                row["after"] = round(time.monotonic() - started, 2)
                say("SEEN", json.dumps(row))
            elif command == "LATENCY":
                addr, lo, hi = words[1], float(words[2]), float(words[3])
                row = wait_for(f"{addr}'s p50 between {lo} and {hi} ms", 6, lambda: (
                    lambda r: r if r and millis(r["p50"]) is not None and lo <= millis(r["p50"]) <= hi else None
                )(rows(driver).get(addr)), driver)
                say("LATENCY", json.dumps(row))
            elif command == "RELOADED":
                generation = words[1]
                text = wait_for(f"generation {generation} and a good reload", 5, lambda: driver.execute_script(
                    "const g = document.getElementById('generation').textContent;"
                    "const r = document.querySelector('[data-field=\"reload-result\"]');"
                    "return g === arguments[0] && r && r.textContent === 'ok'"
                    "  ? document.getElementById('reload').innerText : null;", generation), driver)
                say("RELOADED", json.dumps(text))
            elif command == "CHECK":
                path = os.environ.get("SLUICE_SCREENSHOT")
                if path:
                    screenshot(driver, path)
                check_layouts(driver, addresses)
                logs = severe_logs(driver)
                if logs:
                    fail(f"console messages: {logs}", driver)
                say("CHECKED")
            elif command == "GONE":
                wait_for("the not-reachable notice", 6, lambda: driver.execute_script(
                    "const b = document.getElementById('banner');"
                    "return !b.hidden && b.textContent.includes('not reachable')"), driver)
                # The browser notes each failed request itself; the page adds nothing of its own.
                logs = severe_logs(driver, allow=lambda e: e["source"] == "network" and "/api/status" in e["message"])
                if logs:
                    fail(f"console messages while sluice is down: {logs}", driver)
                say("OK")
                return
            else:
                fail(f"unknown command {line!r}")
        fail("stdin closed before GONE", driver)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
