"""All configuration, read from the environment and ``.env`` by pydantic-settings.

Core settings carry the ``BOT_`` prefix; platform secrets keep the names their
platforms use (``DISCORD_TOKEN``, ``SLACK_BOT_TOKEN`` ...).  ``.env.example``
documents every key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import limits
import platformdirs
from pydantic import AliasChoices, BeforeValidator, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Device = Literal["CPU", "GPU", "NPU", "AUTO"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant in a team chat. Answer clearly and concisely."


def _default_data_dir() -> Path:
    return platformdirs.user_data_path("openvino-team-bot")


def _platform(name: str, default: Any = None) -> Any:
    """A setting read from the platform's own variable name (no BOT_ prefix)."""
    return Field(default=default, validation_alias=AliasChoices(name, name.lower()))


def _split_ids(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.replace(" ", ",").split(",") if item.strip()]
    return value


def _split_lines(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split("|") if item.strip()]
    return value


def _parse_properties(value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value) if value.strip() else {}
    except ValueError:
        raise ValueError('must be a JSON object, for example {"PERFORMANCE_HINT": "LATENCY"}') from None


# A JSON object on the environment; parsed here so that a mistake gets a clear message.
Properties = Annotated[dict[str, str], NoDecode, BeforeValidator(_parse_properties)]
# Comma-separated on the environment ("123,456"), a list in code.
IdList = Annotated[list[str], NoDecode, BeforeValidator(_split_ids)]
# Separated by "|" on the environment (the items are sentences, commas included).
TextList = Annotated[list[str], NoDecode, BeforeValidator(_split_lines)]


class Settings(BaseSettings):
    """The bot's configuration; construct through ``load_settings``."""

    model_config = SettingsConfigDict(
        env_prefix="BOT_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
        populate_by_name=True,
    )

    model_path: Path | None = Field(
        default=None,
        description="An exported OpenVINO model directory or a .gguf file; empty: the bundled model.",
    )
    device: Device = "CPU"
    ov_properties: Properties = Field(
        default_factory=lambda: {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"},
        description="OpenVINO runtime properties; CACHE_DIR defaults to <data dir>/ov-cache.",
    )
    engine: Literal["pipeline", "batching"] = Field(
        default="batching",
        description="batching: replies generate together, in a process of their own, with a prefix cache; "
        "pipeline: one reply at a time, in the bot's process.",
    )
    kv_cache_tokens: int = Field(
        default=8192, ge=256, le=4_194_304, description="Tokens the batching engine's KV cache holds."
    )
    engine_url: IdList = Field(
        default_factory=list,
        description="OpenAI-compatible API bases of model servers (OVMS: http://host:8000/v3, llama.cpp: "
        "http://host:8080/v1), comma-separated; empty: the model runs in the bot's process.",
    )
    engine_model: str | None = Field(
        default=None, description="The model name the servers serve; empty: the first one a server lists."
    )
    engine_api_key: SecretStr | None = Field(default=None, description="Bearer key the servers ask for, if any.")
    engine_capacity: int = Field(
        default=4, ge=1, le=1024, description="Replies each model server generates at once; the rest wait in line."
    )
    engine_timeout_s: float = Field(
        default=60.0, gt=0, description="Longest wait for a server's response or its next token."
    )
    engine_retry_s: float = Field(
        default=30.0, gt=0, description="A server that failed is left out for this long, then tried again."
    )
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_new_tokens: int = Field(default=512, ge=1, le=8192)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    repetition_penalty: float = Field(default=1.0, ge=1.0, le=2.0)
    context_size: int | None = Field(
        default=None, ge=256, description="Prompt + reply token budget; empty: the model's own."
    )
    max_generating: int = Field(
        default=8, ge=1, le=256, description="Replies the batching engine generates at once; the rest wait in line."
    )
    max_waiting: int = Field(
        default=32, ge=1, description="Replies waiting or being written at once; beyond it: a busy answer."
    )
    user_rate: str | None = Field(
        default="10/minute", description="Messages one user may send, e.g. 10/minute; empty: no limit."
    )
    max_message_chars: int = Field(default=8000, ge=1, description="Longest message the bot reads.")
    reply_deadline_s: float = Field(default=300.0, gt=0, description="Longest a reply may take, waiting included.")
    restart_answer_within_s: float = Field(
        default=900.0,
        ge=0,
        description="After a restart, messages left unanswered younger than this are answered; older ones are "
        "told to ask again.",
    )
    history_max_turns: int = Field(default=1000, ge=2, description="Turns kept per conversation; older ones go.")
    history_max_age_days: float | None = Field(
        default=90.0, gt=0, description="Turns older than this are deleted; empty: kept until the turn limit."
    )
    export_sources: IdList = Field(
        default_factory=lambda: ["microsoft/Phi-3-mini-4k-instruct"],
        description="Hugging Face hub ids an admin may export from chat (the terminal's bot export takes any).",
    )
    export_time_limit_s: float = Field(default=7200.0, gt=0, description="Longest an export may run.")
    exports_kept: int = Field(default=3, ge=1, description="Newest exports kept on disk; the current one always is.")
    attachment_max_bytes: int = Field(
        default=100_000, ge=1, description="Most bytes read of each text file attached to a message; the rest is cut."
    )
    catchup_max_messages: int = Field(
        default=200, ge=1, le=1000, description="Most messages of a thread read for a catch-up (newest kept)."
    )
    database_url: SecretStr | None = Field(
        default=None,
        description="postgresql://user:password@host/db for history, the message record and de-duplication "
        "shared by several bot processes; empty: SQLite in the data directory.",
    )
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="Port of the /metrics and /healthz endpoint; empty: off."
    )
    metrics_host: str = Field(default="127.0.0.1", description="Address the metrics endpoint listens on.")
    log_format: Literal["text", "json"] = "text"
    data_dir: Path = Field(default_factory=_default_data_dir)
    log_level: LogLevel = "INFO"

    hf_token: SecretStr | None = _platform("HF_TOKEN")

    discord_token: SecretStr | None = _platform("DISCORD_TOKEN")
    discord_admin_ids: IdList = _platform("DISCORD_ADMIN_IDS", default=[])
    discord_channels: IdList = _platform("DISCORD_CHANNELS", default=[])
    discord_api_base: str = _platform("DISCORD_API_BASE", default="https://discord.com/api/v10")
    discord_gateway_url: str | None = _platform("DISCORD_GATEWAY_URL")
    discord_shard_count: int | None = _platform("DISCORD_SHARD_COUNT")
    discord_shard_ids: IdList = _platform("DISCORD_SHARD_IDS", default=[])

    slack_bot_token: SecretStr | None = _platform("SLACK_BOT_TOKEN")
    slack_app_token: SecretStr | None = _platform("SLACK_APP_TOKEN")
    slack_signing_secret: SecretStr | None = _platform("SLACK_SIGNING_SECRET")
    slack_mode: Literal["socket", "http"] = _platform("SLACK_MODE", default="socket")
    slack_port: int = _platform("SLACK_PORT", default=3000)
    slack_admin_ids: IdList = _platform("SLACK_ADMIN_IDS", default=[])
    slack_channels: IdList = _platform("SLACK_CHANNELS", default=[])
    slack_api_url: str = _platform("SLACK_API_URL", default="https://slack.com/api/")
    slack_edits_per_minute: float = Field(
        default=50.0,
        gt=0,
        le=6000,
        validation_alias=AliasChoices("SLACK_EDITS_PER_MINUTE", "slack_edits_per_minute"),
        description="Posts and edits this process makes a minute, all channels together (Slack's Tier 3).",
    )
    slack_assistant_greeting: str = _platform(
        "SLACK_ASSISTANT_GREETING", default="Hi! Ask me anything, or attach a text file for me to read."
    )
    slack_suggested_prompts: TextList = _platform(
        "SLACK_SUGGESTED_PROMPTS",
        default=["What can you help me with?", "Explain a piece of code", "Draft a short status update"],
    )

    @field_validator("device", "log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("ov_properties", mode="after")
    @classmethod
    def _property_names_upper(cls, value: dict[str, str]) -> dict[str, str]:
        return {key.upper(): str(item) for key, item in value.items()}

    @field_validator(
        "model_path",
        "context_size",
        "discord_token",
        "discord_gateway_url",
        "slack_bot_token",
        "slack_app_token",
        "slack_signing_secret",
        "user_rate",
        "history_max_age_days",
        "metrics_port",
        "hf_token",
        "engine_model",
        "engine_api_key",
        "database_url",
        "discord_shard_count",
        mode="before",
    )
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("user_rate", mode="after")
    @classmethod
    def _rate_is_understood(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            limits.parse(value)
        except ValueError:
            raise ValueError("must be a rate such as 10/minute or 100/hour") from None
        return value

    @model_validator(mode="after")
    def _reply_fits_context(self) -> Settings:
        if self.context_size is not None and self.context_size <= self.max_new_tokens:
            raise ValueError(
                f"BOT_CONTEXT_SIZE ({self.context_size}) must be larger than BOT_MAX_NEW_TOKENS "
                f"({self.max_new_tokens}): the prompt needs room too"
            )
        return self

    @model_validator(mode="after")
    def _shards_fit(self) -> Settings:
        ids, count = self.discord_shard_ids, self.discord_shard_count
        if count is None:
            if ids:
                raise ValueError("DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT, the number of shards of all processes")
            return self
        if count < 1:
            raise ValueError("DISCORD_SHARD_COUNT must be at least 1")
        if not all(item.isdigit() and int(item) < count for item in ids):
            raise ValueError(
                f"DISCORD_SHARD_IDS must be between 0 and {count - 1} (DISCORD_SHARD_COUNT - 1), separated by commas"
            )
        if len({int(item) for item in ids}) != len(ids):
            raise ValueError("DISCORD_SHARD_IDS names a shard twice")
        return self

    def secrets(self) -> list[SecretStr]:
        """Every secret value that is set, for redaction from logs."""
        candidates = (
            self.discord_token,
            self.slack_bot_token,
            self.slack_app_token,
            self.slack_signing_secret,
            self.hf_token,
            self.engine_api_key,
            self.database_url,
        )
        return [secret for secret in candidates if secret is not None]

    @field_validator("data_dir", mode="before")
    @classmethod
    def _blank_is_default_dir(cls, value: object) -> object:
        return _default_data_dir() if isinstance(value, str) and not value.strip() else value

    @property
    def models_dir(self) -> Path:
        """Where bundled and exported models are kept."""
        return self.data_dir / "models"

    @property
    def history_db(self) -> Path:
        """The SQLite file that keeps every conversation's history."""
        return self.data_dir / "history.sqlite3"

    def runtime_properties(self) -> dict[str, str]:
        """OpenVINO properties for compiling the model, with the cache directory filled in."""
        properties = dict(self.ov_properties)
        properties.setdefault("CACHE_DIR", str(self.data_dir / "ov-cache"))
        return properties


class SettingsError(ValueError):
    """One or more settings are invalid; ``str()`` names each variable and why."""


def env_name(field_name: str) -> str:
    """The environment variable that sets ``field_name``."""
    field = Settings.model_fields[field_name]
    if isinstance(field.validation_alias, AliasChoices):
        return str(field.validation_alias.choices[0])
    return f"BOT_{field_name.upper()}"


def describe_errors(error: ValidationError) -> str:
    """One line per invalid variable, never echoing the value (it may be a secret)."""
    lines = []
    for item in error.errors(include_input=False, include_url=False):
        field_name = str(item["loc"][0]) if item["loc"] else ""
        if not field_name:  # a rule across several settings: its message names them
            lines.append(str(item["msg"]).removeprefix("Value error, "))
            continue
        variable = env_name(field_name) if field_name in Settings.model_fields else field_name
        lines.append(f"{variable}: {item['msg']}")
    return "\n".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment and ``.env``; raise ``SettingsError`` if invalid."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise SettingsError(describe_errors(error)) from None
