"""One validated Settings object, read once before serving (flags override environment)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from webhook.kubelet.labels import SelectorError, parse_selector

# The API server never sends more than an AdmissionReview holding a pod twice (object and
# oldObject). etcd caps an object at 1.5 MiB (--max-request-bytes); JSON re-encoding and
# the review's own fields stay well below 2x that, so 7 MiB (controller-runtime's cap,
# webhook/admission/http.go) leaves room without letting a client hold unbounded memory.
DEFAULT_MAX_BODY_BYTES = 7 * 1024 * 1024
# Request line plus headers: Go's net/http DefaultMaxHeaderBytes (1 MiB), which the API
# server's own clients never come near (an AdmissionReview request has a dozen headers).
DEFAULT_MAX_HEADER_BYTES = 1024 * 1024


class Settings(BaseSettings):
    """Everything `pullsecret-injector serve` needs. Environment variables: PSI_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="PSI_", extra="forbid", frozen=True)

    host: str = "0.0.0.0"  # noqa: S104 - a webhook must listen on the pod IP
    port: int = Field(8443, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"  # noqa: S104
    metrics_port: int = Field(8080, ge=0, le=65535)
    cert_file: Path | None = None
    key_file: Path | None = None
    cert_reload_seconds: float = Field(10.0, gt=0)
    dev: bool = False

    objects: Annotated[tuple[Path, ...], NoDecode] = ()
    kubeconfig: Path | None = None
    context: str | None = None

    secret_selector: str = ""
    private_registries: Annotated[tuple[str, ...], NoDecode] = ()
    release_namespace: str = "default"
    source_namespaces: Annotated[tuple[str, ...], NoDecode] = ()
    replication_enabled: bool = True

    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1024)
    live_read_timeout: float = Field(1.0, gt=0)
    workers: int = Field(1, ge=1, le=64)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # ---- hardening (issue 11): HTTP limits, shutdown, large reviews ----
    # Defaults and why: webhook/serve/limits.py (flags: add_hardening_arguments).
    max_header_bytes: int = Field(DEFAULT_MAX_HEADER_BYTES, ge=4096)
    header_read_timeout: float = Field(10.0, gt=0)
    body_read_timeout: float = Field(10.0, gt=0)
    idle_timeout: float = Field(30.0, gt=0)
    max_connections: int = Field(512, ge=1)
    max_inflight_body_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    drain_seconds: float = Field(5.0, ge=0)
    shutdown_timeout: float = Field(10.0, gt=0)
    large_review_bytes: int = Field(256 * 1024, ge=1024)
    large_review_workers: int = Field(1, ge=1, le=16)
    max_containers: int = Field(1000, ge=1)  # core.injection.DEFAULT_MAX_CONTAINERS

    @field_validator("secret_selector")
    @classmethod
    def _valid_selector(cls, value: str) -> str:
        try:
            parse_selector(value)
        except SelectorError as exc:
            raise ValueError(f"secret_selector: {exc}") from exc
        return value

    @field_validator("private_registries", "source_namespaces", "objects", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        """Environment variables hold lists comma-separated: PSI_PRIVATE_REGISTRIES=a,b."""
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @model_validator(mode="after")
    def _body_budget(self) -> Settings:
        if self.max_inflight_body_bytes < self.max_body_bytes:
            raise ValueError(
                "max_inflight_body_bytes must be at least max_body_bytes: the largest "
                "accepted body must fit"
            )
        return self

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        if self.cert_file is None and not self.dev:
            raise ValueError(
                "no serving certificate: give --cert-file and --key-file "
                "(PSI_CERT_FILE/PSI_KEY_FILE), or --dev for a throwaway one"
            )
        if self.objects and self.kubeconfig is not None:
            raise ValueError("--objects and --kubeconfig are exclusive: pick one cluster state")
        return self
