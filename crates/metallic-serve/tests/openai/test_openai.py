"""`metallic serve` through the official `openai` Python package, as users' tools call it.

Run by scripts/test-serve-openai.sh, which builds the `metallic` binary, makes a venv with the
pinned `openai` and `pytest`, and sets:
  METALLIC_BIN      the binary
  METALLIC_SMOLLM2  SmolLM2 135M Instruct Q4_1 (scripts/fetch-smollm2.sh)
  METALLIC_MINILM   all-MiniLM-L6-v2 (scripts/fetch-model.sh)

The servers listen on 127.0.0.1 port 0; the port is read from their `listening on` line. Token
counts stay small: CI runs this on lavapipe with two cores.

Greedy requests that are compared with other runs send `cache_prompt: false` (llama-server's
extension, through `extra_body`): with prefix reuse the prompt's tail is prefilled as a
separate, shorter chunk after positions computed by an earlier request, and a matrix product
over fewer rows may round differently in the last bits. That can flip a near-tie greedy choice,
so the equality checks prefill every prompt the same way, whole.
"""
import base64
import http.client
import json
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.parse

import openai
import pytest

BIN = os.environ["METALLIC_BIN"]
SMOLLM2 = os.environ["METALLIC_SMOLLM2"]
MINILM = os.environ["METALLIC_MINILM"]
KEY = "test-key"
QUESTION = "What is the capital of France?"
NO_CACHE = {"cache_prompt": False}


class Serve:
    """A `metallic serve` process: started with `args`, ready once it says where it listens."""

    def __init__(self, *args):
        self.log = []
        self.url = None
        self.bound = threading.Event()
        self.ready = threading.Event()
        self.proc = subprocess.Popen(
            [BIN, "serve", "--host", "127.0.0.1", "--port", "0", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        threading.Thread(target=self._read_stderr, daemon=True).start()
        self.health_seen = self._probe_health_until_ready()

    def _read_stderr(self):
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))
            if m := re.match(r"bound (http://\S+);", line):
                self.url = m.group(1)
                self.bound.set()
            if m := re.match(r"listening on (http://\S+)$", line.strip()):
                assert m.group(1) == self.url, self.log
                self.ready.set()

    def _probe_health_until_ready(self):
        """Every /health answer from the bind to the `listening on` line."""
        assert self.bound.wait(120), f"no `bound` line: {self.log}"
        seen = []
        deadline = time.time() + 600
        while time.time() < deadline:
            assert self.proc.poll() is None, f"metallic serve exited: {self.log}"
            status, _, body = request(self, "GET", "/health")
            seen.append((status, json.loads(body)))
            if status == 200:
                assert self.ready.wait(10), self.log
                return seen
            time.sleep(0.05)
        raise AssertionError(f"not ready after 600 s: {self.log}")

    def client(self, key=KEY, **kwargs):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, **kwargs)

    def metric(self, name):
        _, _, body = request(self, "GET", "/metrics")
        m = re.search(rf"^{name} (\S+)$", body.decode(), re.M)
        assert m, f"no {name} in /metrics"
        return float(m.group(1))

    def wait_for(self, name, ok, timeout=60):
        deadline = time.time() + timeout
        while not ok(value := self.metric(name)):
            assert time.time() < deadline, f"{name} is still {value}"
            time.sleep(0.05)

    def stop(self, sig=signal.SIGTERM, timeout=120):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def request(server, method, path, body=None, headers=None):
    """(status, headers, body) of one request on a new connection."""
    url = urllib.parse.urlparse(server.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=600)
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    out = (response.status, dict(response.getheaders()), response.read())
    conn.close()
    return out


def open_stream(server, path, body, rcvbuf=None):
    """A raw socket with a streamed request sent and nothing read yet."""
    url = urllib.parse.urlparse(server.url)
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((url.hostname, url.port))
    payload = json.dumps(body).encode()
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nhost: {url.netloc}\r\nauthorization: Bearer {KEY}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n".encode() + payload
    )
    return sock


def read_until(sock, marker, timeout=120):
    sock.settimeout(timeout)
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def sse_events(response):
    """The JSON `data:` payloads of a raw HTTP/1.1 answer with a chunked body."""
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower(), head
    text = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        n = int(size, 16)
        text, body = text + rest[:n], rest[n + 2:]
    return [json.loads(e[len("data: "):]) for e in text.decode().split("\n\n") if e.startswith("data: {")]


def metallic(*args, stdin=None):
    out = subprocess.run([BIN, *args], input=stdin, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def server():
    s = Serve("--model", SMOLLM2, "--embedding-model", MINILM, "--parallel", "4", "--ctx-size", "512",
              "--api-key", KEY)
    yield s
    assert s.stop() == 0, s.log


@pytest.fixture(scope="module")
def small():
    """One sequence and one place in the queue, for the queue limit and the shutdown."""
    s = Serve("--model", SMOLLM2, "--parallel", "1", "--ctx-size", "256", "--max-queue", "1",
              "--api-key", KEY, "--shutdown-grace", "60")
    yield s
    s.stop(signal.SIGKILL)


def test_health_answers_loading_then_ok(server):
    statuses = {status for status, _ in server.health_seen}
    assert statuses <= {200, 503}, server.health_seen
    for status, body in server.health_seen:
        assert body == ({"status": "ok"} if status == 200 else {"status": "loading"})
    assert server.health_seen[-1] == (200, {"status": "ok"})


def test_models_lists_both_models(server):
    ids = [m.id for m in server.client().models.list().data]
    assert ids == ["smollm2-135m-instruct-q4_1", "all-MiniLM-L6-v2"]


def test_chat_plain_and_streamed_equal_metallic_generate_chat(server):
    cli = json.loads(metallic("generate", "--model", SMOLLM2, "--chat", "--prompt", QUESTION,
                              "--temperature", "0", "--max-tokens", "12", "--format", "json"))
    client = server.client()
    messages = [{"role": "user", "content": QUESTION}]
    plain = client.chat.completions.create(model="anything", messages=messages, temperature=0, max_tokens=12,
                                           extra_body=NO_CACHE)
    assert plain.choices[0].message.content == cli["text"]
    assert plain.choices[0].message.role == "assistant"
    assert plain.choices[0].finish_reason == ("length" if len(cli["tokens"]) == 12 else "stop")
    assert plain.usage.prompt_tokens == len(cli["prompt_tokens"])
    assert plain.usage.completion_tokens == len(cli["tokens"])
    assert plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens

    chunks = list(client.chat.completions.create(
        model="anything", messages=messages, temperature=0, max_tokens=12, stream=True,
        stream_options={"include_usage": True}, extra_body=NO_CACHE))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == cli["text"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(cli["tokens"])
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == plain.choices[0].finish_reason


def test_completions_equal_metallic_generate(server):
    prompt = "The capital of France is"
    cli = json.loads(metallic("generate", "--model", SMOLLM2, "--prompt", prompt, "--temperature", "0",
                              "--max-tokens", "8", "--format", "json"))
    out = server.client().completions.create(model="x", prompt=prompt, temperature=0, max_tokens=8,
                                             extra_body=NO_CACHE)
    assert out.object == "text_completion"
    assert out.choices[0].text == cli["text"]
    assert out.usage.prompt_tokens == len(cli["prompt_tokens"])
    # Token ids are a prompt too.
    ids = server.client().completions.create(model="x", prompt=cli["prompt_tokens"], temperature=0, max_tokens=8,
                                             extra_body=NO_CACHE)
    assert ids.choices[0].text == cli["text"]


def f32(values):
    """`values` rounded to f32, as a tuple of floats."""
    return struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values))


def test_embeddings_equal_metallic_embed(server):
    texts = ["The cat sat on the mat.", "Ein Hund bellt im Garten.", "Zürich is in Switzerland."]
    cli = [json.loads(line) for line in metallic("embed", "--model", MINILM, stdin="\n".join(texts) + "\n").splitlines()]
    client = server.client()
    # The openai package asks for base64 by default and decodes it.
    default = client.embeddings.create(model="any", input=texts)
    floats = client.embeddings.create(model="any", input=texts, encoding_format="float")
    assert [d.index for d in default.data] == [0, 1, 2]
    for got, got_floats, want in zip(default.data, floats.data, cli):
        assert f32(got.embedding) == f32(want)
        assert f32(got_floats.embedding) == f32(want)
    assert default.usage.prompt_tokens > len(texts)
    # The raw base64: little-endian f32.
    _, _, body = request(server, "POST", "/v1/embeddings", {"input": texts[0], "encoding_format": "base64"},
                         {"authorization": f"Bearer {KEY}"})
    raw = base64.b64decode(json.loads(body)["data"][0]["embedding"])
    assert f32(struct.unpack(f"<{len(raw) // 4}f", raw)) == f32(cli[0])


def test_stop_strings_cut_the_text_before_them(server):
    client = server.client()
    full = client.chat.completions.create(model="x", messages=[{"role": "user", "content": QUESTION}],
                                          temperature=0, max_tokens=12, extra_body=NO_CACHE)
    text = full.choices[0].message.content
    words = text.split(" ")
    assert len(words) >= 3, text
    stop = " " + words[2][:2]
    for stream in (False, True):
        out = client.chat.completions.create(model="x", messages=[{"role": "user", "content": QUESTION}],
                                             temperature=0, max_tokens=12, stop=[stop, "\u2603never"],
                                             stream=stream, extra_body=NO_CACHE)
        if stream:
            chunks = [c for c in out if c.choices]
            got, finish = "".join(c.choices[0].delta.content or "" for c in chunks), chunks[-1].choices[0].finish_reason
        else:
            got, finish = out.choices[0].message.content, out.choices[0].finish_reason
        assert (got, finish) == (text[:text.index(stop)], "stop")


def test_logprobs_and_usage(server):
    out = server.client().chat.completions.create(
        model="x", messages=[{"role": "user", "content": QUESTION}], temperature=0, max_tokens=6,
        logprobs=True, top_logprobs=2, extra_body=NO_CACHE)
    content = out.choices[0].logprobs.content
    assert len(content) == out.usage.completion_tokens
    assert "".join(t.token for t in content) == out.choices[0].message.content
    for t in content:
        assert len(t.top_logprobs) == 2 and t.top_logprobs[0].token == t.token
        assert t.logprob <= 0 and t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob
        assert bytes(t.bytes).decode("utf-8", "replace") == t.token
    legacy = server.client().completions.create(model="x", prompt="The capital of France is", temperature=0,
                                                max_tokens=4, logprobs=1, extra_body=NO_CACHE)
    lp = legacy.choices[0].logprobs
    assert "".join(lp.tokens) == legacy.choices[0].text
    assert len(lp.token_logprobs) == len(lp.top_logprobs) == legacy.usage.completion_tokens


def test_api_key(server):
    with pytest.raises(openai.AuthenticationError) as wrong:
        server.client(key="wrong").models.list()
    assert wrong.value.status_code == 401 and wrong.value.code == "invalid_api_key"
    status, _, _ = request(server, "GET", "/v1/models")
    assert status == 401
    for open_path in ("/health", "/metrics"):
        assert request(server, "GET", open_path)[0] == 200


def test_error_statuses(server):
    client = server.client(max_retries=0)
    messages = [{"role": "user", "content": "Hi"}]
    for kwargs, param in [
        ({"n": 2}, "n"),
        ({"temperature": 5}, "temperature"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"top_p": -1}, "top_p"),
    ]:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="x", messages=messages, max_tokens=1, **kwargs)
        assert e.value.status_code == 400 and e.value.param == param, kwargs
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="x", prompt="word " * 600, max_tokens=1)
    assert e.value.code == "context_length_exceeded"
    assert "601" in e.value.message and "512" in e.value.message, e.value.message
    with pytest.raises(openai.NotFoundError):
        client.get("/nothing", cast_to=object)
    auth = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    for method, path, body, status in [
        ("POST", "/v1/chat/completions", "{not json", 400),
        ("POST", "/v1/chat/completions", json.dumps({"messages": "Hi"}), 400),
        ("GET", "/v1/chat/completions", None, 405),
        ("POST", "/v1/nothing", "{}", 404),
    ]:
        got, headers, reply = request(server, method, path, body, auth)
        error = json.loads(reply)["error"]
        assert got == status and headers["content-type"] == "application/json", (path, reply)
        assert set(error) == {"message", "type", "param", "code"}
    # Over the 8 MiB body limit.
    status, _, reply = request(server, "POST", "/v1/completions", b" " * (9 << 20), auth)
    assert status == 413 and json.loads(reply)["error"]["code"] == "request_too_large"
    assert request(server, "GET", "/health")[0] == 200


SUBJECTS = [
    "bees", "bridges", "bread", "chess", "rain", "volcanoes", "the moon", "compilers", "Paris", "leaves",
    "jazz", "roads", "fish", "telephones", "glaciers", "silk", "stars", "coffee", "running", "birds", "paper",
    "the heart", "wind", "Egypt", "coral", "trains", "tea", "mountains", "salt", "lighthouses", "computers", "snow",
]


def test_32_concurrent_streams_each_equal_its_solo_answer(server):
    """Short completion prompts: on lavapipe a prompt token costs about what a generated one does."""
    client = server.client(max_retries=0, timeout=600)
    requests = [(f"A few words about {s}:", 4 + i % 5) for i, s in enumerate(SUBJECTS)]

    # cache_prompt false: every prompt prefilled whole, alone or not (see the module docstring).
    def ask(prompt, max_tokens, **kwargs):
        return client.completions.create(model="x", prompt=prompt, temperature=0, max_tokens=max_tokens,
                                         extra_body=NO_CACHE, **kwargs)

    solo = [ask(p, n) for p, n in requests]
    # A reader that reads nothing while the others run, through a tiny receive buffer, with
    # large chunks (20 log-probabilities a token): the server must not wait for it.
    slow_body = {"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 24,
                 "temperature": 0, "stream": True, "logprobs": True, "top_logprobs": 20,
                 "stream_options": {"include_usage": True}}
    slow = open_stream(server, "/v1/chat/completions", slow_body, rcvbuf=4096)
    server.wait_for("metallic_sequences_active", lambda n: n >= 1)

    results = [None] * len(requests)

    def stream(i):
        prompt, n = requests[i]
        chunks = list(ask(prompt, n, stream=True, stream_options={"include_usage": True}))
        results[i] = chunks

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(len(requests))]
    start = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert all(not t.is_alive() for t in threads), "streams did not finish in 300 s"
    elapsed = time.time() - start
    for i, (chunks, alone) in enumerate(zip(results, solo)):
        assert chunks is not None, f"stream {i} failed"
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        assert text == alone.choices[0].text, (i, text, alone.choices[0].text)
        assert chunks[-1].usage.completion_tokens == alone.usage.completion_tokens, i
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == alone.choices[0].finish_reason

    # The slow reader's answer is whole: as many log-probabilities as generated tokens.
    events = sse_events(read_until(slow, b"data: [DONE]\n\n\r\n0\r\n\r\n"))
    slow.close()
    tokens = sum(len(e["choices"][0]["logprobs"]["content"]) for e in events if e["choices"] and e["choices"][0]["logprobs"])
    assert events[-1]["usage"]["completion_tokens"] == tokens > 0, events[-1]
    server.wait_for("metallic_sequences_active", lambda n: n == 0)
    assert server.metric("metallic_kv_positions_used") == 0
    assert server.metric("metallic_queue_depth") == 0
    print(f"32 streams in {elapsed:.1f} s")


def test_a_client_hanging_up_mid_stream_frees_its_sequence(server):
    before = server.metric("metallic_generated_tokens_total")
    sock = open_stream(server, "/v1/completions", {"prompt": "Once upon a time", "max_tokens": 300, "temperature": 0,
                                                   "stream": True})
    read_until(sock, b'"text":"')
    server.wait_for("metallic_generated_tokens_total", lambda n: n > before)
    sock.close()
    server.wait_for("metallic_sequences_active", lambda n: n == 0)
    assert server.metric("metallic_kv_positions_used") == 0
    after = server.metric("metallic_generated_tokens_total")
    assert after - before < 150
    time.sleep(0.5)
    assert server.metric("metallic_generated_tokens_total") == after, "the generation went on"


def test_a_full_queue_gives_429_and_the_server_stays_healthy(small):
    # Greedy: the first request surely runs on while the queue fills (no early end of text).
    long = {"prompt": "Once upon a time", "max_tokens": 200, "temperature": 0, "stream": True}
    running = open_stream(small, "/v1/completions", long)
    small.wait_for("metallic_sequences_active", lambda n: n == 1)
    waiting = open_stream(small, "/v1/completions", long)
    small.wait_for("metallic_queue_depth", lambda n: n == 1)
    with pytest.raises(openai.RateLimitError) as e:
        small.client(max_retries=0).completions.create(model="x", prompt="Hi", max_tokens=1)
    assert e.value.status_code == 429 and e.value.code == "queue_full"
    assert request(small, "GET", "/health")[0] == 200
    running.close()
    waiting.close()
    small.wait_for("metallic_sequences_active", lambda n: n == 0)
    small.wait_for("metallic_queue_depth", lambda n: n == 0)
    out = small.client(max_retries=0).completions.create(model="x", prompt="Hi", max_tokens=2)
    assert out.usage.completion_tokens >= 1


def test_sigterm_lets_the_request_in_flight_finish_and_exits_0(small):
    """Last: it stops the `small` server."""
    sock = open_stream(small, "/v1/completions", {"prompt": "Hello", "max_tokens": 24, "temperature": 0,
                                                  "stream": True})
    data = read_until(sock, b"data: ")
    small.proc.send_signal(signal.SIGTERM)
    # New connections are refused while the answer in flight goes on.
    url = urllib.parse.urlparse(small.url)
    deadline = time.time() + 10
    while True:
        try:
            socket.create_connection((url.hostname, url.port), timeout=1).close()
        except OSError:
            break
        assert time.time() < deadline, "still accepting connections 10 s after SIGTERM"
        time.sleep(0.02)
    data += read_until(sock, b"data: [DONE]\n\n\r\n0\r\n\r\n")
    sock.close()
    assert sse_events(data)[-1]["choices"][0]["finish_reason"] in ("stop", "length"), data
    assert small.proc.wait(60) == 0, small.log
    assert any(line.startswith("stopping:") for line in small.log), small.log
