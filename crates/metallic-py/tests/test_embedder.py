"""metallic.Embedder against sentence-transformers' reference vectors and the `metallic embed` CLI."""
import json
import os

import numpy as np
import pytest

import metallic
from conftest import MINILM, cli, fixture

REFERENCE = fixture("minilm", "reference.json")
CASES = REFERENCE["cases"]
TEXTS = [c["text"] for c in CASES]
# Without the 256-token case, which pads every text of its batch to 256 tokens (slow on a
# software adapter); the reference test covers it.
SHORT = [c["text"] for c in CASES if len(c["ids"]) < 100]


def cosine(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_embeddings_match_sentence_transformers(embedder):
    # Tolerances of crates/metallic-models/tests/minilm.rs.
    got = embedder.encode(TEXTS)
    assert got.shape == (len(CASES), 384) and got.dtype == np.float32
    for case, row in zip(CASES, got):
        want = np.asarray(case["embedding"], np.float32)
        assert cosine(row, want) >= 0.9999, case["name"]
        assert abs(np.linalg.norm(row.astype(np.float64)) - 1.0) < 1e-5, case["name"]
        assert np.max(np.abs(row - want)) < 1e-4, case["name"]


def test_embeddings_equal_the_cli(embedder):
    lines = "".join(json.dumps(t) + "\n" for t in SHORT)
    out = cli("embed", "--model", MINILM, "--input-format", "jsonl", stdin=lines)
    want = np.array([json.loads(line) for line in out.splitlines()], np.float32)
    got = embedder.encode(SHORT)
    assert want.shape == got.shape
    assert np.max(np.abs(got - want)) <= 1e-6


def test_token_ids_match_sentence_transformers(embedder):
    for case in CASES:
        assert embedder.tokenize(case["text"]) == case["ids"], case["name"]
    assert embedder.tokenize(TEXTS) == [c["ids"] for c in CASES]


def test_model_facts(embedder):
    assert embedder.dimension == 384 == embedder.get_sentence_embedding_dimension()
    assert embedder.max_seq_length == REFERENCE["max_seq_length"]
    assert embedder.normalizes and embedder.pooling == "mean" and embedder.dtype == "f32"
    assert "all-MiniLM-L6-v2" in repr(embedder)


def test_a_single_string_gives_one_vector(embedder):
    one = embedder.encode(TEXTS[0])
    assert one.shape == (384,) and one.dtype == np.float32
    batched = embedder.encode(SHORT[:4])
    # Alone or batched with longer texts: the same vector but for rounding.
    assert np.max(np.abs(one - batched[0])) < 1e-5
    assert embedder.encode([TEXTS[0]]).shape == (1, 384)


def test_empty_list_and_other_iterables(embedder):
    empty = embedder.encode([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32
    from_tuple = embedder.encode(tuple(SHORT[:2]))
    from_generator = embedder.encode(t for t in SHORT[:2])
    assert np.array_equal(from_tuple, from_generator)
    assert from_tuple.flags.writeable


def test_convert_to_numpy_false_gives_lists(embedder):
    arrays = embedder.encode(SHORT[:2])
    lists = embedder.encode(SHORT[:2], convert_to_numpy=False)
    assert isinstance(lists, list) and isinstance(lists[0], list) and len(lists[0]) == 384
    assert np.array_equal(np.array(lists, np.float32), arrays)
    single = embedder.encode(TEXTS[0], convert_to_numpy=False)
    assert isinstance(single, list) and isinstance(single[0], float)


def test_batch_size_changes_nothing_but_rounding(embedder):
    whole = embedder.encode(SHORT[:6], batch_size=32)
    ones = embedder.encode(SHORT[:6], batch_size=1)
    assert np.max(np.abs(whole - ones)) < 1e-5
    with pytest.raises(metallic.InvalidArgumentError, match="batch size must be at least 1"):
        embedder.encode(SHORT[:2], batch_size=0)


@pytest.fixture(scope="module")
def unnormalized(tmp_path_factory):
    """all-MiniLM-L6-v2 without its Normalize module: mean-pooled vectors of any length."""
    d = tmp_path_factory.mktemp("minilm-no-normalize")
    for entry in os.listdir(MINILM):
        if entry != "modules.json":
            os.symlink(MINILM / entry, d / entry)
    with open(MINILM / "modules.json", encoding="utf-8") as f:
        modules = [m for m in json.load(f) if not m["type"].endswith("Normalize")]
    (d / "modules.json").write_text(json.dumps(modules))
    return metallic.Embedder(d)


def test_normalize_embeddings(embedder, unnormalized):
    assert not unnormalized.normalizes
    raw = unnormalized.encode(SHORT[:5])
    norms = np.linalg.norm(raw, axis=1)
    assert np.all(np.abs(norms - 1.0) > 0.1), norms
    assert np.array_equal(unnormalized.encode(SHORT[:5], normalize_embeddings=False), raw)
    unit = unnormalized.encode(SHORT[:5], normalize_embeddings=True)
    assert np.allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-6)
    assert np.allclose(unit, raw / norms[:, None], atol=1e-6)
    # Normalising the mean-pooled vectors is exactly what the full pipeline does.
    assert np.max(np.abs(unit - embedder.encode(SHORT[:5]))) < 1e-6
    # As in sentence-transformers, False does not undo the model's own Normalize module.
    assert np.array_equal(embedder.encode(SHORT[:5], normalize_embeddings=False), embedder.encode(SHORT[:5]))


def test_similarity_is_cosine(embedder, unnormalized):
    a = unnormalized.encode(SHORT[:3])
    b = unnormalized.encode(TEXTS[3:7])
    got = embedder.similarity(a, b)
    assert got.shape == (3, 4) and got.dtype == np.float32
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    assert np.allclose(got, an @ bn.T, atol=1e-6)
    one = embedder.similarity(a[0], b[1])
    assert one.shape == (1, 1) and abs(one[0, 0] - got[0, 1]) < 1e-6
    assert np.allclose(np.diag(embedder.similarity(a, a)), 1.0, atol=1e-6)
    # Lists work too, and the closest pair is the paraphrase.
    cat, feline, stock = embedder.encode(
        ["The cat sat on the mat.", "A feline rested on a rug.", "Stock markets fell sharply today."])
    scores = embedder.similarity([cat.tolist()], [feline.tolist(), stock.tolist()])
    assert scores[0, 0] > scores[0, 1] + 0.2


def test_similarity_rejects_mismatched_widths(embedder):
    with pytest.raises(metallic.InvalidArgumentError, match="different widths"):
        embedder.similarity(np.ones(3), np.ones(4))
    with pytest.raises(metallic.InvalidArgumentError, match="shape"):
        embedder.similarity(np.ones((2, 2, 2)), np.ones(2))
    with pytest.raises(TypeError):
        embedder.similarity(["not", "numbers"], np.ones(2))


def test_f16_stays_close():
    f16 = metallic.Embedder(MINILM, dtype="f16")
    assert f16.dtype == "f16"
    for case, row in zip(CASES[:5], f16.encode(TEXTS[:5])):
        assert cosine(row, case["embedding"]) >= 0.999, case["name"]
