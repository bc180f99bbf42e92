"""metallic.Llm: tokenizer against llama.cpp's fixtures, generation against the `metallic` CLI,
streaming, stop strings, chat and cancellation."""
import json
import os
import time

import pytest

import metallic
from conftest import SMOLLM2, TINY_GGUF, cli, fixture

PROMPT = "The capital of France is"
QUESTION = "What is the capital of France?"
TOKENIZE = fixture("smollm2", "tokenize.json")
CHATS = fixture("smollm2", "chat_templates.json")


def cli_generate(*args):
    out = cli("generate", "--model", SMOLLM2, "--format", "json", *args)
    return json.loads(out.strip().splitlines()[-1])


# --- tokenizer -----------------------------------------------------------------------------


def test_tokenize_matches_llama_cpp(llm):
    for case in TOKENIZE["texts"]:
        assert llm.tokenize(case["text"]) == case["ids_with_bos"], case["name"]
        assert llm.tokenize(case["text"], add_bos=False) == case["ids_no_bos"], case["name"]
        if "ids_no_bos_no_parse_special" in case:
            got = llm.tokenize(case["text"], add_bos=False, parse_special=False)
            assert got == case["ids_no_bos_no_parse_special"], case["name"]
        # llama.cpp's /detokenize prints special tokens.
        assert llm.detokenize(case["ids_no_bos"], special=True) == case["detokenized_no_bos"], case["name"]
    for case in TOKENIZE["detokenize"]:
        assert llm.detokenize(case["ids"], special=True) == case["text"], case["name"]


def test_special_tokens_are_parsed_only_when_asked(llm):
    parsed = llm.tokenize("<|im_start|>user", parse_special=True)
    plain = llm.tokenize("<|im_start|>user", parse_special=False)
    assert parsed[0] == 1 and len(parsed) == 2
    assert 1 not in plain and len(plain) > 2
    # Control tokens print nothing unless asked; plain text survives either way.
    assert llm.detokenize(parsed) == "user"
    assert llm.detokenize(parsed, special=True) == "<|im_start|>user"
    assert llm.detokenize(plain) == "<|im_start|>user"


def test_tokenize_detokenize_round_trip(llm):
    for text in ["Hello world", "  two  spaces", "naïve café ☕ 日本語", "line\n\nbreaks\tand tabs", ""]:
        assert llm.detokenize(llm.tokenize(text, add_bos=False)) == text


def test_add_bos(tmp_path):
    # The tiny model's tokenizer adds no BOS; the same file with `add_bos_token` set does.
    data = TINY_GGUF.read_bytes()
    key = b"tokenizer.ggml.add_bos_token"
    at = data.index(key) + len(key)
    assert data[at:at + 5] == b"\x07\x00\x00\x00\x00", "a bool key holding false"
    patched = tmp_path / "bos.gguf"
    patched.write_bytes(data[:at + 4] + b"\x01" + data[at + 5:])
    plain, with_bos = metallic.Llm(TINY_GGUF), metallic.Llm(patched)
    assert plain.tokenize("hello") == plain.tokenize("hello", add_bos=False)
    ids = with_bos.tokenize("hello")
    assert ids[0] == with_bos.bos_token_id == 319
    assert with_bos.tokenize("hello", add_bos=False) == ids[1:] == plain.tokenize("hello")


def test_model_facts(llm):
    assert llm.vocab_size == 49152
    assert llm.context_size == 8192
    assert sorted(llm.end_token_ids) == TOKENIZE["meta"]["eog_ids"]
    assert llm.eos_token_id == 2 and llm.bos_token_id == 1
    assert str(llm.path) == str(SMOLLM2)


# --- generation ----------------------------------------------------------------------------


def test_greedy_generation_equals_the_cli(llm):
    want = cli_generate("--prompt", PROMPT, "--max-tokens", "20", "--temperature", "0")
    got = llm.generate(PROMPT, max_tokens=20, temperature=0)
    assert got.prompt_tokens == want["prompt_tokens"]
    assert got.tokens == want["tokens"]
    assert got.text == want["text"]
    assert got.finish_reason == "length" and len(got.tokens) == 20
    assert got.prompt_time > 0 and got.generation_time > 0 and got.tokens_per_second > 0


def test_an_f32_kv_cache_equals_the_cli_with_cache_type_f32():
    want = cli_generate("--prompt", PROMPT, "--max-tokens", "12", "--temperature", "0", "--cache-type", "f32")
    got = metallic.Llm(SMOLLM2, cache_type="f32").generate(PROMPT, max_tokens=12, temperature=0)
    assert got.tokens == want["tokens"] and len(got.tokens) == 12


def test_seeded_sampling_equals_the_cli(llm):
    want = cli_generate("--prompt", PROMPT, "--max-tokens", "12", "--temperature", "1.2", "--seed", "7",
                        "--top-k", "20", "--top-p", "0.9", "--min-p", "0.02", "--repeat-penalty", "1.1")
    got = llm.generate(PROMPT, 12, temperature=1.2, seed=7, top_k=20, top_p=0.9, min_p=0.02, repeat_penalty=1.1)
    assert got.tokens == want["tokens"]
    again = llm.generate(PROMPT, 12, temperature=1.2, seed=7, top_k=20, top_p=0.9, min_p=0.02, repeat_penalty=1.1)
    assert again.tokens == got.tokens
    other = llm.generate(PROMPT, 12, temperature=1.2, seed=8, top_k=20, top_p=0.9, min_p=0.02, repeat_penalty=1.1)
    assert other.tokens != got.tokens


def test_a_prompt_of_token_ids(llm):
    ids = llm.tokenize(PROMPT)
    assert llm.generate(ids, 8, temperature=0).tokens == llm.generate(PROMPT, 8, temperature=0).tokens


def test_stream_pieces_make_up_the_generated_text(llm):
    whole = llm.generate(PROMPT, max_tokens=20, temperature=0)
    stream = llm.stream(PROMPT, max_tokens=20, temperature=0)
    assert stream.result is None
    pieces = list(stream)
    assert len(pieces) > 5 and all(isinstance(p, str) and p for p in pieces)
    assert "".join(pieces) == whole.text
    assert stream.result.tokens == whole.tokens
    assert stream.result.finish_reason == "length"
    assert list(stream) == []


def test_max_tokens_zero_generates_nothing(llm):
    r = llm.generate(PROMPT, max_tokens=0)
    assert r.text == "" and r.tokens == [] and r.finish_reason == "length"


def test_stop_strings(llm):
    full = llm.generate(PROMPT, max_tokens=12, temperature=0).text
    assert full.startswith(" Paris.\n"), full
    cut = llm.generate(PROMPT, max_tokens=12, temperature=0, stop=["\n", "."])
    assert cut.text == " Paris" and cut.finish_reason == "stop"
    # A stop string that spans tokens (" Paris" and ".") and ends inside the text.
    spanning = llm.generate(PROMPT, max_tokens=12, temperature=0, stop="ris.")
    assert spanning.text == " Pa" and spanning.finish_reason == "stop"
    assert len(spanning.tokens) < 12
    streamed = llm.stream(PROMPT, max_tokens=12, temperature=0, stop=["ris."])
    assert "".join(streamed) == " Pa" and streamed.result.finish_reason == "stop"
    # A stop string that never appears changes nothing.
    assert llm.generate(PROMPT, max_tokens=12, temperature=0, stop=["zebra"]).text == full


def test_chat_template_matches_llama_cpp(llm):
    checked = 0
    for case in CHATS["conversations"]:
        request = case["request"]
        if request.get("tools") or not request["add_generation_prompt"]:
            continue
        if request["messages"][-1]["role"] == "assistant":
            continue
        assert llm.apply_chat_template(request["messages"]) == case["prompt"], case["name"]
        assert llm.tokenize(case["prompt"]) == case["prompt_ids"], case["name"]
        checked += 1
    assert checked >= 3


def test_chat_equals_the_cli(llm):
    messages = [{"role": "user", "content": QUESTION}]
    want = cli_generate("--chat", "--prompt", QUESTION, "--max-tokens", "24", "--temperature", "0")
    got = llm.chat(messages, max_tokens=24, temperature=0)
    assert got.tokens == want["tokens"] and got.text == want["text"]
    assert got.prompt_tokens == llm.tokenize(llm.apply_chat_template(messages))
    # The reply ends with the end-of-turn token before max_tokens.
    assert got.finish_reason == "stop" and len(got.tokens) < 24, got
    assert "Paris" in got.text
    assert "".join(llm.stream_chat(messages, max_tokens=24, temperature=0)) == got.text


def test_chat_continues_an_assistant_message(llm):
    messages = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": "The capital"}]
    prompt = llm.apply_chat_template(messages)
    assert prompt.endswith("<|im_start|>assistant\nThe capital")
    assert llm.chat(messages, 4, temperature=0).tokens == llm.generate(prompt, 4, temperature=0).tokens


# --- cancellation --------------------------------------------------------------------------


def threads():
    return len(os.listdir("/proc/self/task"))


def test_close_cancels_the_generation(llm):
    llm.generate(PROMPT, 2, temperature=0)  # warm: the device's own threads exist from here on
    stream = llm.stream(PROMPT, max_tokens=400, temperature=0)
    first = next(stream)
    assert first
    started = time.monotonic()
    stream.close()
    closed_in = time.monotonic() - started
    result = stream.result
    assert result.finish_reason == "cancelled"
    assert len(result.tokens) < 40, len(result.tokens)
    assert result.text.startswith(first)
    assert list(stream) == []
    # One token on lavapipe takes well under a second: close did not run the 400 tokens.
    assert closed_in < 5.0
    stream.close()


def test_dropping_a_stream_stops_its_thread(llm):
    llm.generate(PROMPT, 2, temperature=0)
    before = threads()
    stream = llm.stream(PROMPT, max_tokens=400, temperature=0)
    next(stream)
    assert threads() == before + 1
    started = time.monotonic()
    del stream
    assert threads() == before, "the generation thread outlived its stream"
    assert time.monotonic() - started < 5.0


def test_breaking_out_of_a_loop_cancels(llm):
    llm.generate(PROMPT, 2, temperature=0)
    before = threads()

    def first_pieces(n):
        got = []
        for piece in llm.stream(PROMPT, max_tokens=400, temperature=0):
            got.append(piece)
            if len(got) == n:
                break
        return got

    started = time.monotonic()
    pieces = first_pieces(3)
    assert len(pieces) == 3
    assert threads() == before
    assert time.monotonic() - started < 30.0
    # The model is free for the next call, which gives the same start.
    assert llm.generate(PROMPT, 3, temperature=0).text.startswith("".join(pieces[:2]))


def test_a_with_block_closes_the_stream(llm):
    with llm.stream(PROMPT, max_tokens=400, temperature=0) as stream:
        next(stream)
    assert stream.result.finish_reason == "cancelled"


def test_a_stream_is_read_in_another_thread(tiny):
    import threading
    stream = tiny.stream([5, 6, 7], max_tokens=8, temperature=0)
    out = []
    t = threading.Thread(target=lambda: out.extend(stream))
    t.start()
    t.join(60)
    assert "".join(out) == tiny.generate([5, 6, 7], 8, temperature=0).text
