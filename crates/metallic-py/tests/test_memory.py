"""Memory is given back when objects are dropped: no growth over many create/drop cycles."""
import gc

import metallic
from conftest import TINY_GGUF

MIB = 1 << 20


def rss():
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def growth(cycle, cycles, warmup=50):
    for _ in range(warmup):
        cycle()
    gc.collect()
    before = rss()
    for _ in range(cycles):
        cycle()
    gc.collect()
    return rss() - before


def test_models_are_freed_when_dropped():
    # Each tiny model holds ~300 KB of weights plus its runtime; keeping them would add
    # hundreds of MiB over 1,000 cycles.
    grew = growth(lambda: metallic.Llm(TINY_GGUF).vocab_size, 1000)
    assert grew < 24 * MIB, f"RSS grew by {grew / MIB:.1f} MiB over 1000 models"


def test_streams_and_results_are_freed(tiny):
    def cycle():
        stream = tiny.stream([5, 6, 7], max_tokens=64, temperature=0)
        next(stream)
        del stream  # cancelled and joined here
        tiny.generate([5, 6], max_tokens=1).text

    grew = growth(cycle, 1000, warmup=30)
    assert grew < 16 * MIB, f"RSS grew by {grew / MIB:.1f} MiB over 1000 streams"
