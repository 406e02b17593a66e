"""This app's own settings: the template's parameters (upper-cased, as the platform
passes them) read from the environment, then ``app.env`` (the rendered answers), then
``.env`` (local secrets). Services (LiteLLM, Qdrant, NATS, MLflow, Langfuse) are read by
agentcycle's ``Settings`` from their platform variables."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE = __name__.split(".")[0]


class AppConfig(BaseSettings):
    model_config = SettingsConfigDict(env_file=("app.env", ".env"), extra="ignore")

    llm_model: str = ""  # LLM_MODEL: a LiteLLM model name; empty: the bundled model
    workers: int = 2  # WORKERS: multi-agent workers started in this process
    docs_dir: Path = Path("docs")  # DOCS_DIR: the documents a RAG agent ingests at start
    collection: str = PACKAGE  # COLLECTION: the Qdrant collection they go into
