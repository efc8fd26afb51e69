"""Prometheus metrics, served at ``GET /metrics``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "june_http_requests_total", "HTTP requests by route and status.", ["method", "route", "status"]
)
# Turns under load take longer than prometheus_client's default top bucket (10 s): with it,
# every p95 above 10 s read as 10 s (seen on the dashboard under june bench load).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 7.5, 10, 15, 20, 30, 60)
HTTP_LATENCY = Histogram(
    "june_http_request_seconds",
    "HTTP request latency by route.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
TRITON_LATENCY = Histogram(
    "june_triton_request_seconds",
    "Latency of Triton inference calls by model.",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
TRITON_ERRORS = Counter(
    "june_triton_errors_total", "Failed Triton calls by model and kind.", ["model", "kind"]
)
DOCUMENTS_INGESTED = Counter("june_documents_ingested_total", "Documents ingested.")
CHUNKS_INGESTED = Counter("june_chunks_ingested_total", "Chunks embedded and stored.")
STAGE_LATENCY = Histogram(
    "june_stage_seconds",
    "Latency of each stage of a voice turn (decode, transcribe, ...).",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
TURN_ERRORS = Counter(
    "june_turn_errors_total",
    "Voice/text turns that ended without an answer, by kind (no_speech, stream, ...).",
    ["kind"],
)
ADMISSION_REFUSED = Counter(
    "june_admission_refused_total",
    "Requests refused at once (503) because a stage was full.",
    ["stage"],
)
QUEUE_DEPTH = Gauge("june_queue_depth", "Requests waiting for each stage.", ["stage"])
MODEL_RECOVERIES = Counter(
    "june_model_recoveries_total",
    "Pipelines brought back by June (a model reloaded, or tritonserver restarted).",
    ["model", "action"],
)
DISCONNECTS = Counter(
    "june_client_disconnects_total", "Requests whose client left; their work was cancelled."
)
REFUSED = Counter(
    "june_refused_total",
    "Requests refused, by cause: the HTTP status (400, 401, 403, 409, 413, 415, 422, 429, "
    "503), or a live session's error event.",
    ["cause"],
)
LIVE_SESSIONS = Gauge("june_live_sessions", "Live voice (WebSocket) sessions open now.")
BARGE_INS = Counter(
    "june_barge_ins_total", "Replies stopped because the user talked over them (live voice)."
)
BOT_UPDATES = Counter(
    "june_bot_updates_total",
    "Bot messages (bot: tg or discord) by outcome: answered (voice or text), replayed (a "
    "redelivery, not answered again), document_added, bad_document, too_big, not_allowed, "
    "rate_limited, busy, too_long, no_speech, bad_audio, failed.",
    ["bot", "outcome"],
)
PIPELINE_UP = Gauge(
    "june_pipeline_up",
    "1 when a Triton pipeline answered its last request or probe, 0 when it failed.",
    ["pipeline"],
)
