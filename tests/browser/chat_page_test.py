#!/usr/bin/python3
"""Browser test of the chat page of `llamarun serve` (web/chat.html, served at /): headless Chromium
through Selenium (Debian's chromium, chromium-driver, python3-selenium) against a running server that
has an API key. Checks: the page loads without the key, a 401 from the API is reported and the key
field fixes it, the model's name and context length come from /v1/models, a reply streams (its text
grows over several updates before the request finishes) and ends with a tokens/s figure, Stop
cancels a running reply (the server counts the disconnect). scripts/test-browser.sh runs it.

Usage: chat_page_test.py --url http://127.0.0.1:PORT --api-key KEY [--screenshot docs/chat-page.png]
"""
import argparse
import json
import re
import sys
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait


def http_get(url, key=None):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode("utf-8", "replace")


def metric(url, key, name):
    _, _, text = http_get(url + "/metrics", key)
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"/metrics has no {name}")


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


# Records every change of the newest assistant message's text (time, length) and when it is done.
OBSERVER_JS = """
window.__samples = [];
const log = document.getElementById('log');
new MutationObserver(() => {
  const msgs = log.querySelectorAll('.msg.assistant');
  if (!msgs.length) return;
  const m = msgs[msgs.length - 1];
  const n = m.querySelector('.body').textContent.length;
  const last = window.__samples[window.__samples.length - 1];
  const done = m.classList.contains('done');
  if (!last || last.n !== n || last.done !== done) window.__samples.push({t: performance.now(), n, done});
}).observe(log, {childList: true, subtree: true, characterData: true, attributes: true});
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--screenshot", default="")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    a = ap.parse_args()
    url, key = a.url.rstrip("/"), a.api_key

    # The page itself needs no key; the API does.
    for path in ("/", "/index.html"):
        status, ctype, body = http_get(url + path)
        check(status == 200, f"GET {path}: status {status}")
        check(ctype.startswith("text/html"), f"GET {path}: content type {ctype!r}")
        check("<title>llamarun chat</title>" in body, f"GET {path}: not the chat page")
        check("http://" not in body and "https://" not in body,
              "the page must load nothing from elsewhere")
    status, _, _ = http_get(url + "/v1/models")
    check(status == 401, f"GET /v1/models without the key: {status}, expected 401")
    status, _, body = http_get(url + "/v1/models", key)
    check(status == 200, f"GET /v1/models: {status}")
    model = json.loads(body)["data"][0]
    check(isinstance(model.get("max_model_len"), int), f"/v1/models lacks max_model_len: {model}")

    opts = webdriver.ChromeOptions()
    opts.binary_location = a.chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,820", "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(a.chromedriver), options=opts)
    try:
        wait = WebDriverWait(driver, 60, poll_frequency=0.05)
        driver.get(url + "/")
        check(driver.title == "llamarun chat", f"title {driver.title!r}")
        status_el = driver.find_element(By.ID, "status")
        # Without a key the API answers 401: the page says so and asks for the key.
        wait.until(lambda d: "API key" in status_el.text)
        check(driver.find_element(By.ID, "model-name").text == "?", "model shown without a key")
        key_el = driver.find_element(By.ID, "api-key")
        key_el.send_keys(key)
        key_el.send_keys(Keys.TAB)  # 'change' -> reloads /v1/models with the key
        wait.until(lambda d: d.find_element(By.ID, "model-name").text != "?")
        check(driver.find_element(By.ID, "model-name").text == model["id"], "model name")
        check(driver.find_element(By.ID, "model-ctx").text == str(model["max_model_len"]), "context length")
        check(status_el.text == "ready", f"status {status_el.text!r}")

        def set_field(id_, value):
            el = driver.find_element(By.ID, id_)
            el.clear()
            el.send_keys(value)

        set_field("system", "You are a helpful assistant.")
        set_field("temperature", "0")
        set_field("max-tokens", "80")
        driver.execute_script(OBSERVER_JS)
        box = driver.find_element(By.ID, "input")
        box.send_keys("Write a short story about a robot who learns to paint.")
        box.send_keys(Keys.ENTER)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant.done, .msg.error"))
        errs = driver.find_elements(By.CSS_SELECTOR, ".msg.error")
        check(not errs, "the reply failed: " + (errs[0].text if errs else ""))
        samples = driver.execute_script("return window.__samples")
        lengths = [s["n"] for s in samples if not s["done"]]
        growing = [n for n in lengths if n > 0]
        # Streamed: the text grew in several steps before the message was marked done.
        check(len(set(growing)) >= 5, f"the reply did not stream (lengths seen: {lengths})")
        check(growing == sorted(growing), f"the reply text shrank: {growing}")
        check(samples[-1]["done"], "the reply never finished")
        check(samples[-1]["t"] - next(s["t"] for s in samples if s["n"] > 0) > 0, "no time between updates")
        reply = driver.find_element(By.CSS_SELECTOR, ".msg.assistant.done .body").text
        stats = driver.find_element(By.CSS_SELECTOR, ".msg.assistant.done .stats").text
        check(len(reply.strip()) > 0, "empty reply")
        m = re.search(r"(\d+) tokens \u00b7 ([\d.]+) tokens/s", stats)
        check(m is not None, f"no tokens/s in the stats line {stats!r}")
        check(1 <= int(m.group(1)) <= 80 and float(m.group(2)) > 0, f"implausible stats {stats!r}")
        print(f"chat page: reply of {m.group(1)} tokens at {m.group(2)} tokens/s in {len(set(growing))} "
              f"updates: {reply[:60]!r}...")
        if a.screenshot:
            driver.save_screenshot(a.screenshot)
            print(f"chat page: screenshot in {a.screenshot}")

        # Stop: a long reply is cancelled from the page; the server sees the client leave.
        before = metric(url, key, "llamarun_client_disconnects_total")
        set_field("max-tokens", "1000")  # the server runs with --ctx 2048
        box.send_keys("Now tell me a very long story about the same robot, with many chapters.")
        box.send_keys(Keys.ENTER)

        def second_reply_started(d):
            if d.find_elements(By.CSS_SELECTOR, ".msg.error"):
                return True
            msgs = d.find_elements(By.CSS_SELECTOR, ".msg.assistant")
            return len(msgs) == 2 and msgs[1].find_element(By.CSS_SELECTOR, ".body").text

        wait.until(second_reply_started)
        errs = driver.find_elements(By.CSS_SELECTOR, ".msg.error")
        check(not errs, "the second reply failed: " + (errs[0].text if errs else ""))
        check(driver.find_element(By.ID, "stop").is_enabled(), "Stop is disabled while generating")
        driver.find_element(By.ID, "stop").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant.done")) == 2)
        stats2 = driver.find_elements(By.CSS_SELECTOR, ".msg.assistant.done .stats")[1].text
        check("stopped" in stats2, f"the stopped reply says {stats2!r}")
        check(driver.find_element(By.ID, "send").is_enabled(), "Send stays disabled after Stop")
        deadline = time.time() + 20
        while metric(url, key, "llamarun_client_disconnects_total") <= before:
            check(time.time() < deadline, "the server did not see the stopped request go away")
            time.sleep(0.1)
        print(f"chat page: Stop cancelled the reply ({stats2})")

        bad = [e for e in driver.get_log("browser")
               if e["level"] == "SEVERE" and "401" not in e["message"]]
        check(not bad, f"errors in the browser console: {bad}")
    finally:
        driver.quit()
    print("chat page: OK")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"chat page test FAILED: {e}", file=sys.stderr)
        sys.exit(1)
