"""The chat page of `metallic serve` in a real browser: headless Chromium driven by Selenium.

Run by scripts/test-webui.sh, which installs Debian's chromium and chromium-driver, makes a
venv with the pinned selenium and pytest, builds the `metallic` binary and sets:
  METALLIC_BIN          the binary
  METALLIC_SMOLLM2      SmolLM2 135M Instruct Q4_1 (scripts/fetch-smollm2.sh)
  METALLIC_WEBUI_ARTIFACTS  where screenshots go (target/webui-artifacts)
  METALLIC_CHROMIUM, METALLIC_CHROMEDRIVER  the browser and its driver (default: from PATH)

One server with an API key serves every test, and one browser visits it; the tests run in
file order and build on each other (the first one enters the key the others use). The greedy
comparison comes first, on a server that has computed nothing yet: the page's request then
prefills its whole prompt, as the API request it is compared with does (`cache_prompt: false`),
so the two cannot differ by a prefix reused from another request rounding differently.

Replies stay a few tokens long: CI runs this on lavapipe with two cores.
"""
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

BIN = os.environ["METALLIC_BIN"]
SMOLLM2 = os.environ["METALLIC_SMOLLM2"]
ARTIFACTS = os.environ.get("METALLIC_WEBUI_ARTIFACTS", "target/webui-artifacts")
KEY = "webui-test-key"
MODEL = os.path.basename(SMOLLM2).removesuffix(".gguf")
SYSTEM = "You are a helpful assistant. Answer in one sentence."
QUESTION = "What is the capital of France?"
DESKTOP = (1280, 800)
PHONE = (390, 844)


class Serve:
    """A `metallic serve` process on 127.0.0.1, port chosen by the system."""

    def __init__(self, *args, wait_ready=True):
        self.log = []
        self.url = None
        self.bound = threading.Event()
        self.ready = threading.Event()
        self.proc = subprocess.Popen(
            [BIN, "serve", "--host", "127.0.0.1", "--port", "0", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        threading.Thread(target=self._read_stderr, daemon=True).start()
        assert self.bound.wait(120), f"no `bound` line: {self.log}"
        if wait_ready:
            assert self.ready.wait(300), f"not ready: {self.log}"

    def _read_stderr(self):
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))
            if m := re.match(r"bound (http://\S+);", line):
                self.url = m.group(1)
                self.bound.set()
            if re.match(r"listening on http://\S+$", line.strip()):
                self.ready.set()

    def request(self, method, path, body=None, key=KEY):
        """(status, headers, body bytes) of one request."""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=300) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def metric(self, name):
        _, _, body = self.request("GET", "/metrics", key=None)
        m = re.search(rf"^{name} (\S+)$", body.decode(), re.M)
        assert m, f"no {name} in /metrics"
        return float(m.group(1))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def wait(what, check, timeout=60, interval=0.05):
    """Polls `check` until it returns something true, and returns that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {timeout} s for {what}")
        time.sleep(interval)


@pytest.fixture(scope="module")
def server():
    s = Serve("--model", SMOLLM2, "--parallel", "2", "--ctx-size", "1024", "--api-key", KEY)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("METALLIC_CHROMIUM") or shutil.which("chromium")
    # No sandbox: CI containers (and root) cannot make Chromium's namespaces; the browser only
    # visits the local test server.
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-first-run", "--disable-extensions", "--lang=en-US",
                f"--window-size={DESKTOP[0]},{DESKTOP[1]}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver_path = os.environ.get("METALLIC_CHROMEDRIVER") or shutil.which("chromedriver")
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    viewport(driver, DESKTOP)
    os.makedirs(ARTIFACTS, exist_ok=True)
    yield driver
    driver.quit()


def viewport(driver, size, mobile=False):
    """Makes the page's viewport exactly `size` CSS pixels."""
    width, height = size
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})


def js(driver, script, *args):
    return driver.execute_script(script, *args)


def page_state(driver):
    return js(driver, "return document.body.dataset.state")


def dialog_open(driver):
    return js(driver, "return document.getElementById('key-dialog').open")


def field(driver, element_id, value):
    element = driver.find_element(By.ID, element_id)
    element.clear()
    if value:
        element.send_keys(value)


def settings(driver, system="", temperature="0", max_tokens="16"):
    field(driver, "system", system)
    field(driver, "temperature", temperature)
    field(driver, "max-tokens", max_tokens)


def send(driver, text):
    box = driver.find_element(By.ID, "prompt")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def conversation(driver):
    return js(driver, "return window.metallicChat.conversation()")


def last_reply_text(driver):
    """The text the last assistant message shows."""
    return js(driver, """
        const replies = document.querySelectorAll('#log .message.assistant .content');
        return replies.length ? replies[replies.length - 1].innerText : null;""")


def wait_idle(driver, timeout=120):
    wait("the reply to end", lambda: page_state(driver) == "idle", timeout)


def new_chat(driver):
    driver.find_element(By.ID, "new-chat").click()
    assert conversation(driver) == []
    assert js(driver, "return document.querySelectorAll('#log .message').length") == 0


def test_the_page_asks_for_the_key_once_and_keeps_it(server, browser):
    # The page is served without the key; the API it calls is not.
    status, headers, body = server.request("GET", "/", key=None)
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert b'<script src="/webui/app.js"' in body
    assert server.request("GET", "/v1/models", key=None)[0] == 401

    browser.get(server.url + "/")
    wait("the key prompt", lambda: dialog_open(browser), 30)
    assert browser.find_element(By.ID, "model").text != MODEL
    browser.save_screenshot(os.path.join(ARTIFACTS, "key-prompt.png"))

    # A wrong key: refused, and asked again.
    key = browser.find_element(By.ID, "key")
    key.send_keys("wrong-key")
    key.send_keys(Keys.ENTER)
    error = browser.find_element(By.ID, "key-error")
    wait("the refusal", lambda: error.is_displayed() and "refused" in error.text, 30)
    assert dialog_open(browser)

    browser.find_element(By.ID, "key").send_keys(KEY, Keys.ENTER)
    wait("the model's name", lambda: browser.find_element(By.ID, "model").text == MODEL, 30)
    assert not dialog_open(browser)
    assert js(browser, "return localStorage.getItem('metallic.apiKey')") == KEY

    # Kept: a new visit does not ask again.
    browser.refresh()
    wait("the model's name", lambda: browser.find_element(By.ID, "model").text == MODEL, 30)
    assert not dialog_open(browser)


def test_a_streamed_reply_equals_the_api_greedy_answer(server, browser):
    settings(browser, system=SYSTEM, temperature="0", max_tokens="16")

    # Shift+Enter is a new line, not a message.
    box = browser.find_element(By.ID, "prompt")
    box.send_keys("first line", Keys.SHIFT, Keys.ENTER, Keys.SHIFT, "second line")
    assert box.get_attribute("value") == "first line\nsecond line"
    assert conversation(browser) == [] and page_state(browser) == "idle"
    box.clear()

    send(browser, QUESTION)
    # Watch the reply grow while it streams.
    shown = []
    deadline = time.monotonic() + 120
    while page_state(browser) != "idle":
        assert time.monotonic() < deadline, "the reply did not end"
        text = last_reply_text(browser)
        if text and (not shown or shown[-1] != text):
            shown.append(text)
        time.sleep(0.02)
    page = conversation(browser)
    assert [m["role"] for m in page] == ["user", "assistant"], page
    assert page[0]["content"] == QUESTION
    reply = page[1]["content"]

    status, _, body = server.request("POST", "/v1/chat/completions", {
        "model": MODEL, "temperature": 0, "max_tokens": 16, "cache_prompt": False,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}],
    })
    assert status == 200, body
    answer = json.loads(body)
    expected = answer["choices"][0]["message"]["content"]
    assert reply == expected
    assert last_reply_text(browser).split() == expected.split()
    # Streamed: the page showed it in more than one piece, each a beginning of the next.
    assert len(shown) >= 2, shown
    assert all(b.startswith(a.rstrip()) for a, b in zip(shown, shown[1:])), shown

    # The numbers of the last reply.
    stats = browser.find_element(By.ID, "stats")
    assert int(stats.get_attribute("data-tokens")) == answer["usage"]["completion_tokens"]
    assert float(stats.get_attribute("data-ttft")) > 0
    assert float(stats.get_attribute("data-tokens-per-second")) > 0
    assert "tokens/s" in stats.text and "first token after" in stats.text, stats.text

    # A second turn sends the whole conversation, with the key.
    js(browser, """
        window.sentBodies = [];
        const fetchOriginal = window.fetch;
        window.fetch = function (input, init) {
          if (init && init.body) {
            window.sentBodies.push({url: String(input), body: JSON.parse(init.body),
                                    authorization: new Headers(init.headers).get('Authorization')});
          }
          return fetchOriginal.apply(this, arguments);
        };""")
    field(browser, "max-tokens", "4")
    send(browser, "And of Germany?")
    wait_idle(browser)
    sent = js(browser, "return window.sentBodies")
    assert len(sent) == 1, sent
    assert sent[0]["url"] == "/v1/chat/completions" and sent[0]["authorization"] == f"Bearer {KEY}"
    assert sent[0]["body"]["messages"] == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": expected},
        {"role": "user", "content": "And of Germany?"},
    ]
    assert sent[0]["body"]["temperature"] == 0 and sent[0]["body"]["max_tokens"] == 4
    assert sent[0]["body"]["stream"] is True and sent[0]["body"]["model"] == MODEL
    assert len(conversation(browser)) == 4


def test_stop_ends_the_reply_and_the_server_frees_the_sequence(server, browser):
    new_chat(browser)
    settings(browser, temperature="0", max_tokens="400")
    before = server.metric("metallic_generated_tokens_total")
    send(browser, "Count from 1 to 1000, separated by commas.")
    wait("some of the reply", lambda: len(last_reply_text(browser) or "") >= 12, 120)
    assert server.metric("metallic_sequences_active") >= 1

    stopped_at = time.monotonic()
    browser.find_element(By.ID, "stop").click()
    wait_idle(browser, 10)
    # 400 tokens would take a minute more here: the sequence is freed because the page hung up.
    wait("the sequence to be freed", lambda: server.metric("metallic_sequences_active") == 0, 10)
    freed_after = time.monotonic() - stopped_at
    generated = server.metric("metallic_generated_tokens_total")
    time.sleep(1.0)
    assert server.metric("metallic_generated_tokens_total") == generated, "still decoding after the stop"
    assert generated - before < 200, (before, generated)
    print(f"sequence freed {freed_after:.2f} s after Stop, {generated - before:.0f} tokens generated")

    page = conversation(browser)
    assert [m["role"] for m in page] == ["user", "assistant"]
    assert page[1]["content"] and page[1]["content"].startswith("1")
    notes = browser.find_elements(By.CSS_SELECTOR, "#log .message.assistant .note")
    assert [n.text for n in notes] == ["stopped"]
    assert "stopped" in browser.find_element(By.ID, "stats").text
    assert browser.find_element(By.ID, "send").is_displayed()
    assert not browser.find_element(By.ID, "stop").is_displayed()


HOSTILE = "\n".join([
    "Hello <script>window.pwned = 1</script> and <img src=x onerror=\"window.pwned = 2\">",
    "",
    "**bold <b>not bold</b>** and *italic* and `<code>inline</code>`",
    "",
    "[safe](https://example.com/a?b=1) [evil](javascript:window.pwned=3) [data](data:text/html,<script>x</script>)",
    "",
    "- one <iframe src=\"javascript:window.pwned=4\"></iframe>",
    "- two",
    "  - nested",
    "",
    "```html",
    "<script>window.pwned = 5</script>",
    "```",
    "<svg onload=\"window.pwned = 6\"></svg>",
])


def test_the_markdown_renderer_builds_text_not_html(browser):
    js(browser, """
        document.getElementById('render-check')?.remove();
        const box = document.createElement('div');
        box.id = 'render-check';
        box.append(window.metallicChat.renderMarkdown(arguments[0]));
        document.body.append(box);""", HOSTILE)
    time.sleep(0.5)  # an injected handler would have run by now
    assert js(browser, "return window.pwned") is None
    box = "#render-check"
    for tag in ("script", "img", "iframe", "svg", "b", "style", "object", "embed"):
        assert not browser.find_elements(By.CSS_SELECTOR, f"{box} {tag}"), tag
    assert js(browser, f"return document.querySelectorAll('{box} *').length") > 0
    attributes = js(browser, f"""
        return [...document.querySelectorAll('{box} *')].flatMap(e => [...e.attributes].map(a => a.name));""")
    assert set(attributes) <= {"href", "rel", "target", "class", "type", "aria-label"}, attributes
    text = js(browser, f"return document.querySelector('{box}').textContent")
    assert '<script>window.pwned = 1</script>' in text
    assert '<img src=x onerror="window.pwned = 2">' in text
    assert '<svg onload="window.pwned = 6"></svg>' in text
    # The subset it renders.
    assert js(browser, f"return document.querySelector('{box} strong').textContent") == "bold <b>not bold</b>"
    assert js(browser, f"return document.querySelector('{box} em').textContent") == "italic"
    assert js(browser, f"return document.querySelector('{box} p code').textContent") == "<code>inline</code>"
    assert js(browser, f"return document.querySelector('{box} pre code').textContent") == \
        "<script>window.pwned = 5</script>"
    assert js(browser, f"return document.querySelector('{box} .code-head span').textContent") == "html"
    assert js(browser, f"return document.querySelectorAll('{box} > ul > li').length") == 2
    assert js(browser, f"return document.querySelector('{box} ul > li > ul > li').textContent") == "nested"
    links = js(browser, f"return [...document.querySelectorAll('{box} a')].map(a => [a.textContent, a.href])")
    assert links == [["safe", "https://example.com/a?b=1"]], links
    js(browser, "document.getElementById('render-check').remove()")


def test_a_reply_with_a_script_tag_is_shown_as_text(server, browser):
    new_chat(browser)
    settings(browser, temperature="0", max_tokens="24")
    prompt = "Repeat exactly this text: <script>window.pwned = 1</script>"
    send(browser, prompt)
    wait_idle(browser)
    reply = conversation(browser)[-1]["content"]
    # SmolLM2 repeats it (greedy); the check below needs a reply that holds the tag.
    assert "<script>window.pwned = 1</script>" in reply, reply
    assert "<script>window.pwned = 1</script>" in last_reply_text(browser)
    user = browser.find_element(By.CSS_SELECTOR, "#log .message.user .content")
    assert user.text == prompt
    assert not browser.find_elements(By.CSS_SELECTOR, "#log script, #log img, #log iframe")
    assert js(browser, "return window.pwned") is None


def test_the_page_fits_desktop_and_phone_widths(server, browser):
    new_chat(browser)
    settings(browser, temperature="0", max_tokens="40")
    send(browser, "Write a Python function that adds two numbers.")
    wait_idle(browser)
    # The model answers with a fenced block, rendered as one.
    code = browser.find_elements(By.CSS_SELECTOR, "#log .message.assistant pre code")
    assert code and "def " in code[0].text, conversation(browser)[-1]["content"]

    # Every control has a name a screen reader can say.
    unnamed = js(browser, """
        return [...document.querySelectorAll('input, textarea, button, select')]
          .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
          .map(e => e.id || e.outerHTML);""")
    assert unnamed == []

    for name, size, mobile in (("desktop", DESKTOP, False), ("phone", PHONE, True)):
        viewport(browser, size, mobile)
        if mobile and js(browser, "return document.getElementById('settings').open"):
            browser.find_element(By.CSS_SELECTOR, "#settings summary").click()
        time.sleep(0.3)
        width = js(browser, "return window.innerWidth")
        assert width == size[0]
        # Nothing wider than the window; the message box and its button are on screen.
        assert js(browser, "return document.documentElement.scrollWidth") <= width, name
        for element_id in ("prompt", "send", "new-chat"):
            rect = js(browser, "return arguments[0].getBoundingClientRect().toJSON()",
                      browser.find_element(By.ID, element_id))
            assert 0 <= rect["left"] and rect["right"] <= width, (name, element_id, rect)
            assert 0 <= rect["top"] and rect["bottom"] <= size[1], (name, element_id, rect)
        path = os.path.join(ARTIFACTS, f"{name}.png")
        assert browser.save_screenshot(path), path
    browser.find_element(By.CSS_SELECTOR, "#settings summary").click()
    browser.save_screenshot(os.path.join(ARTIFACTS, "phone-settings.png"))
    viewport(browser, DESKTOP)


def test_the_browser_saw_no_policy_violation_or_script_error(browser):
    problems = [entry["message"] for entry in browser.get_log("browser")
                if "Content Security Policy" in entry["message"] or "Uncaught" in entry["message"]]
    assert problems == []


def test_no_webui_turns_the_page_off():
    # The routes exist from the bind on: no need to wait for the model.
    off = Serve("--model", SMOLLM2, "--no-webui", wait_ready=False)
    try:
        for path in ("/", "/webui/app.js"):
            status, headers, body = off.request("GET", path, key=None)
            assert status == 404, (path, body)
            assert headers["Content-Type"] == "application/json"
            assert json.loads(body)["error"]["type"] == "not_found_error"
    finally:
        off.stop()
