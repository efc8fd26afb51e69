"""The ``embed`` ensemble on a real tritonserver: quality against sentence-transformers."""

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from exporters.embedder import resolve_source

TEXTS = [
    "hello",
    "What time does the pharmacy open on Sunday?",
    "The invoice total is $1,249.99, due on 2026-12-01.",
    "Le musée du Louvre est fermé le mardi.",
    "Der Zug nach München hat zwanzig Minuten Verspätung.",
    "東京は日本の首都です。",
    "Привет, как дела?",
    "🙂🚀🔥",
    "SELECT * FROM users; DROP TABLE documents; --",
    "https://example.com/path?query=1&b=2",
    "a",
    "   leading and trailing spaces   ",
    "The mitochondria is the powerhouse of the cell. " * 30,  # truncated at 256 tokens
    "Email me at someone@example.org before 5 pm.",
    "Turn left after the second traffic light, then park behind the blue garage.",
    "naïve café résumé coöperate",
    "x = lambda y: y ** 2  # python code",
    "The quick brown fox jumps over the lazy dog.",
    "I'd like to book a table for four at 7:30 tonight.",
    "Remind me to water the plants every three days.",
    "مرحبا بالعالم",
]


def embed(client: grpcclient.InferenceServerClient, texts: list[str]) -> np.ndarray:
    data = np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)
    tensor = grpcclient.InferInput("TEXT", list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    return client.infer("embed", [tensor]).as_numpy("EMBEDDING")


@pytest.fixture(scope="module")
def grpc(triton):
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def reference():
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(resolve_source(None)), device="cpu")
    return model.encode(TEXTS, normalize_embeddings=True)


def test_served_embeddings_match_sentence_transformers(grpc, reference):
    served = embed(grpc, TEXTS)
    assert served.shape == (len(TEXTS), 384)
    assert served.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-4)
    cosine = (served * reference).sum(axis=1)
    assert len(TEXTS) >= 20
    assert cosine.min() > 0.999, dict(zip(TEXTS, cosine.round(5), strict=True))


def test_concurrent_requests_are_batched_and_correct(grpc, reference, triton):
    """Single-text requests in parallel: the dynamic batcher joins them; results unchanged."""

    def one(i: int) -> np.ndarray:
        c = grpcclient.InferenceServerClient(triton.grpc_url)
        try:
            return embed(c, [TEXTS[i]])[0]
        finally:
            c.close()

    def counts() -> tuple[int, int]:
        stats = grpc.get_inference_statistics("embed_encoder", as_json=True)["model_stats"][0]
        return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))

    def settled(expected: int | None = None) -> tuple[int, int]:
        """Triton updates statistics just after responding: wait until they stop moving."""
        deadline, last = time.monotonic() + 10, counts()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            current = counts()
            if current == last and (expected is None or current[0] >= expected):
                return current
            last = current
        return last

    inferences_before, executions_before = settled()
    with ThreadPoolExecutor(8) as pool:
        rows = list(pool.map(one, range(len(TEXTS))))
    inferences_after, executions_after = settled(inferences_before + len(TEXTS))
    cosine = (np.stack(rows) * reference).sum(axis=1)
    assert cosine.min() > 0.999
    assert inferences_after - inferences_before == len(TEXTS)
    # Fewer executions than requests: the dynamic batcher merged concurrent requests.
    assert executions_after - executions_before < len(TEXTS)


def test_invalid_utf8_does_not_kill_the_model(grpc):
    data = np.array([[b"\xff\xfe\xfa"], [b"fine"]], dtype=np.object_)
    tensor = grpcclient.InferInput("TEXT", list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    out = grpc.infer("embed", [tensor]).as_numpy("EMBEDDING")
    assert out.shape == (2, 384)
    assert grpc.is_model_ready("embed")
