"""One settings object: the platform's service variables, with embedded defaults.

On a Thinkube cluster the platform's service discovery sets the variables named in
``validation_alias`` below; on a laptop none are set and every service falls back to
an embedded default under the data directory (``./.agentcycle`` or ``AGENTCYCLE_HOME``).
Nothing reads the environment at import time: build ``Settings()`` when you need it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


def _variable(name: str) -> str:
    field = Settings.model_fields.get(name)
    alias = field.validation_alias if field else None
    return str(alias.choices[0]) if isinstance(alias, AliasChoices) else name


class Settings(BaseSettings):
    """Where each service lives: the platform's real one, or the embedded default."""

    model_config = SettingsConfigDict(extra="ignore")

    def __init__(self, **values: Any):
        # Settings(home=...) in code must work, not be silently ignored: a field name
        # becomes its variable's name. (populate_by_name would also read a variable named
        # after the field: HOME for home.)
        super().__init__(**{_variable(name): value for name, value in values.items()})

    home: Path = Field(Path(".agentcycle"), validation_alias=_env("AGENTCYCLE_HOME"))
    cache_dir: Path | None = Field(
        None,
        validation_alias=_env("AGENTCYCLE_CACHE"),
        description="Converted models; defaults to <home>/models.",
    )

    # Models: any HF model directory replaces a bundled one.
    chat_model: str | None = Field(None, validation_alias=_env("AGENTCYCLE_CHAT_MODEL"))
    embedding_model: str | None = Field(
        None, validation_alias=_env("AGENTCYCLE_EMBEDDING_MODEL")
    )
    cloud_model: str | None = Field(
        None,
        validation_alias=_env("AGENTCYCLE_CLOUD_MODEL"),
        description="A LiteLLM model name used as the last fallback, e.g. gpt-4o-mini.",
    )
    server_url: str | None = Field(
        None,
        validation_alias=_env("AGENTCYCLE_SERVER_URL"),
        description="An OpenAI-compatible server already running the chat model.",
    )
    energy_usd_per_hour: float = Field(
        0.0,
        validation_alias=_env("AGENTCYCLE_ENERGY_USD_PER_HOUR"),
        description="What an hour of local inference costs; 0 makes local calls free.",
    )

    # LiteLLM gateway (cloud providers).
    litellm_endpoint: str | None = Field(
        None, validation_alias=_env("LITELLM_ENDPOINT", "LITELLM_URL", "LITELLM_API_BASE")
    )
    litellm_master_key: str | None = Field(None, validation_alias=_env("LITELLM_MASTER_KEY"))
    # Thinkube LLM Gateway (local models on the cluster).
    llm_gateway_url: str | None = Field(None, validation_alias=_env("LLM_GATEWAY_URL"))
    thinkube_api_token: str | None = Field(None, validation_alias=_env("THINKUBE_API_TOKEN"))

    qdrant_url: str | None = Field(None, validation_alias=_env("QDRANT_URL"))
    qdrant_host: str | None = Field(None, validation_alias=_env("QDRANT_HOST"))
    qdrant_port: int = Field(6333, validation_alias=_env("QDRANT_PORT"))
    qdrant_api_key: str | None = Field(None, validation_alias=_env("QDRANT_API_KEY"))

    mlflow_tracking_uri: str | None = Field(None, validation_alias=_env("MLFLOW_TRACKING_URI"))
    mlflow_username: str | None = Field(
        None, validation_alias=_env("MLFLOW_AUTH_USERNAME", "MLFLOW_TRACKING_USERNAME")
    )
    mlflow_password: str | None = Field(
        None, validation_alias=_env("MLFLOW_AUTH_PASSWORD", "MLFLOW_TRACKING_PASSWORD")
    )
    mlflow_experiment: str = Field("agentcycle", validation_alias=_env("AGENTCYCLE_EXPERIMENT"))

    langfuse_host: str | None = Field(None, validation_alias=_env("LANGFUSE_HOST"))
    langfuse_public_key: str | None = Field(None, validation_alias=_env("LANGFUSE_PUBLIC_KEY"))
    langfuse_secret_key: str | None = Field(None, validation_alias=_env("LANGFUSE_SECRET_KEY"))

    nats_url: str | None = Field(None, validation_alias=_env("NATS_URL"))
    nats_host: str | None = Field(None, validation_alias=_env("NATS_HOST"))
    nats_port: int = Field(4222, validation_alias=_env("NATS_CLIENT_PORT"))

    # PostgreSQL (the workflow checkpointer's platform store); SQLite when unset.
    database_url: str | None = Field(None, validation_alias=_env("DATABASE_URL"))
    postgres_host: str | None = Field(None, validation_alias=_env("POSTGRES_HOST"))
    postgres_port: int = Field(5432, validation_alias=_env("POSTGRES_PORT"))
    postgres_user: str | None = Field(None, validation_alias=_env("POSTGRES_USER"))
    postgres_password: str | None = Field(None, validation_alias=_env("POSTGRES_PASSWORD"))
    postgres_db: str = Field("agentcycle", validation_alias=_env("POSTGRES_DB"))

    # GitOps deploy (`agentcycle deploy`): Gitea holds the app's repo, ArgoCD syncs it.
    domain_name: str | None = Field(None, validation_alias=_env("DOMAIN_NAME"))
    gitea_url: str | None = Field(None, validation_alias=_env("GITEA_URL"))
    gitea_token: SecretStr | None = Field(None, validation_alias=_env("GITEA_TOKEN"))
    gitea_org: str = Field("thinkube-deployments", validation_alias=_env("GITEA_ORG"))
    gitea_webhook_secret: SecretStr | None = Field(
        None, validation_alias=_env("GITEA_WEBHOOK_SECRET"),
        description="The secret Argo Events' gitea-webhook EventSource checks.")
    argocd_server: str | None = Field(None, validation_alias=_env("ARGOCD_SERVER"))
    argocd_auth_token: SecretStr | None = Field(
        None, validation_alias=_env("ARGOCD_AUTH_TOKEN"))

    # Valkey/Redis: the router's state shared by its proxy replicas (router.shared_state).
    redis_url: str | None = Field(None, validation_alias=_env("REDIS_URL", "CACHE_URL"))
    valkey_host: str | None = Field(None, validation_alias=_env("VALKEY_HOST"))
    valkey_port: int = Field(6379, validation_alias=_env("VALKEY_PORT"))
    valkey_password: str | None = Field(None, validation_alias=_env("VALKEY_PASSWORD"))
    router_state: Literal["auto", "local", "redis"] = Field(
        "auto", validation_alias=_env("AGENTCYCLE_ROUTER_STATE"),
        description="auto: Redis when REDIS_URL/CACHE_URL is set; redis: also VALKEY_*.")
    router_namespace: str | None = Field(
        None, validation_alias=_env("AGENTCYCLE_ROUTER_NAMESPACE", "APP_NAME"),
        description="Replicas with the same namespace share budgets and cooldowns.")

    # The agent app's admission policy (agentcycle.app.AppPolicy.from_settings).
    api_keys: SecretStr | None = Field(
        None, validation_alias=_env("AGENTCYCLE_API_KEYS"),
        description="The agent app's keys: name=key,name2=key2 (names show in traces).")
    api_keys_file: Path | None = Field(None, validation_alias=_env("AGENTCYCLE_API_KEYS_FILE"))
    app_requests_per_minute: int | None = Field(
        60, validation_alias=_env("AGENTCYCLE_APP_REQUESTS_PER_MINUTE"))
    app_tokens_per_day: int | None = Field(
        None, validation_alias=_env("AGENTCYCLE_APP_TOKENS_PER_DAY"))
    app_max_body_bytes: int = Field(65536, validation_alias=_env("AGENTCYCLE_APP_MAX_BODY_BYTES"))
    app_max_concurrency: int = Field(4, validation_alias=_env("AGENTCYCLE_APP_MAX_CONCURRENCY"))
    cors_origins: str | None = Field(None, validation_alias=_env("AGENTCYCLE_CORS_ORIGINS"))

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        if self.qdrant_url is None and self.qdrant_host:
            self.qdrant_url = f"http://{self.qdrant_host}:{self.qdrant_port}"
        if self.nats_url is None and self.nats_host:
            self.nats_url = f"nats://{self.nats_host}:{self.nats_port}"
        if self.database_url is None and self.postgres_host:
            from urllib.parse import quote

            auth = quote(self.postgres_user or "postgres", safe="")
            if self.postgres_password:
                auth += ":" + quote(self.postgres_password, safe="")
            self.database_url = (f"postgresql://{auth}@{self.postgres_host}:"
                                 f"{self.postgres_port}/{self.postgres_db}")
        return self

    # -- derived locations -------------------------------------------------------
    @property
    def models_dir(self) -> Path:
        return (self.cache_dir or self.home / "models").resolve()

    @property
    def qdrant_path(self) -> Path:
        return (self.home / "qdrant").resolve()

    @property
    def tracking_uri(self) -> str:
        """MLflow's store: the platform's server, or SQLite under the data dir."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @property
    def nats_dir(self) -> Path:
        """The embedded NATS server's JetStream store."""
        return (self.home / "nats").resolve()

    @property
    def checkpoint_uri(self) -> str:
        """The workflow checkpointer: the platform's PostgreSQL, or SQLite here."""
        return self.database_url or f"sqlite:///{(self.home / 'workflows.db').resolve()}"

    @property
    def artifacts_dir(self) -> Path:
        return (self.home / "mlartifacts").resolve()

    @property
    def router_redis_url(self) -> str | None:
        """The Redis/Valkey URL of the router's shared state, if one is configured."""
        if self.redis_url or not self.valkey_host:
            return self.redis_url
        from urllib.parse import quote

        auth = f":{quote(self.valkey_password, safe='')}@" if self.valkey_password else ""
        return f"redis://{auth}{self.valkey_host}:{self.valkey_port}/0"

    @property
    def langfuse_enabled(self) -> bool:
        return bool(self.langfuse_host and self.langfuse_public_key and self.langfuse_secret_key)

    @property
    def cloud_api_base(self) -> str | None:
        return self.litellm_endpoint

    def ensure_home(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        return self.home


ServiceMode = Literal["real", "embedded", "off"]
