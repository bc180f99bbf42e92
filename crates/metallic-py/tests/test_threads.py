"""One model used from several Python threads at once, with the GIL released while it works."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from test_embedder import SHORT

PROMPT = "The capital of France is"


def test_one_embedder_from_several_threads(embedder):
    alone = embedder.encode(SHORT[:6])
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: embedder.encode(SHORT[:6]), range(4)))
    for got in results:
        assert np.array_equal(got, alone)


def test_one_llm_from_several_threads(llm):
    alone = llm.generate(PROMPT, 8, temperature=0)
    seeded = llm.generate(PROMPT, 8, temperature=0.9, seed=3)
    jobs = [dict(temperature=0), dict(temperature=0.9, seed=3)] * 2
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda kw: llm.generate(PROMPT, 8, **kw), jobs))
    for kw, got in zip(jobs, results):
        want = alone if kw["temperature"] == 0 else seeded
        assert got.tokens == want.tokens, kw
    # Streams from several threads at once.
    with ThreadPoolExecutor(3) as pool:
        texts = list(pool.map(lambda _: "".join(llm.stream(PROMPT, 8, temperature=0)), range(3)))
    assert texts == [alone.text] * 3


def longest_pause_while(work):
    """(Longest time this Python thread could not run, duration) while `work` runs on another
    thread."""
    done = threading.Event()
    thread = threading.Thread(target=lambda: (work(), done.set()))
    started = last = time.perf_counter()
    longest = 0.0
    thread.start()
    while not done.is_set():
        now = time.perf_counter()
        longest = max(longest, now - last)
        last = now
    thread.join()
    return longest, time.perf_counter() - started


def test_the_gil_is_released_while_the_gpu_works(llm, embedder):
    # Were the GIL held for the whole call, this thread would stop for about its duration.
    for work in (lambda: llm.generate(PROMPT, 16, temperature=0), lambda: embedder.encode(SHORT * 2)):
        pause, duration = longest_pause_while(work)
        assert duration > 0.3, "the work is too short to tell"
        assert pause < duration / 3, (pause, duration)
