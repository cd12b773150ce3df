"""One validated Settings object, read once before serving; flags and env come from it.

Every tunable of ``pullsecret-injector serve`` is a field of :class:`Settings`, declared
once with its default, bounds and help. From that one declaration come:

- the environment variable ``PSI_<NAME>`` (pydantic-settings; lists comma-separated);
- the command-line flag (:func:`add_arguments`): ``--<name-with-dashes>`` unless the field
  names another (``flag``), lists repeatable, booleans as ``--x/--no-x``; the help shows
  the variable and the default;
- the precedence: flags over environment over defaults (:func:`settings_from_args`).

The chart passes the ones an operator would touch (values.yaml); ``serve --help`` lists
them all.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from webhook.kubelet.labels import SelectorError, parse_selector

ENV_PREFIX = "PSI_"

# The API server never sends more than an AdmissionReview holding a pod twice (object and
# oldObject). etcd caps an object at 1.5 MiB (--max-request-bytes); JSON re-encoding and
# the review's own fields stay well below 2x that, so 7 MiB (controller-runtime's cap,
# webhook/admission/http.go) leaves room without letting a client hold unbounded memory.
DEFAULT_MAX_BODY_BYTES = 7 * 1024 * 1024
# Request line plus headers: Go's net/http DefaultMaxHeaderBytes (1 MiB), which the API
# server's own clients never come near (an AdmissionReview request has a dozen headers).
DEFAULT_MAX_HEADER_BYTES = 1024 * 1024

_GROUPS = (
    "serving",
    "cluster state",
    "injection",
    "replication",
    "recovery",
    "limits and shutdown",
    "tuning",
)


def _f(default: Any, help: str, group: str, *, flag: str | None = None, **kw: Any) -> Any:
    """A field with its help, its place in `serve --help` and, if it differs, its flag."""
    extra: dict[str, Any] = {"group": group}
    if flag is not None:
        extra["flag"] = flag
    return Field(default, description=help, json_schema_extra=extra, **kw)


class Settings(BaseSettings):
    """Everything `pullsecret-injector serve` needs. Environment variables: PSI_<NAME>."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    # ---- serving -----------------------------------------------------------------------
    host: str = _f("0.0.0.0", "address of the HTTPS /mutate listener", "serving")  # noqa: S104
    port: int = _f(8443, "HTTPS port", "serving", ge=0, le=65535)
    metrics_host: str = _f("0.0.0.0", "address of the plain-HTTP listener", "serving")  # noqa: S104
    metrics_port: int = _f(8080, "/healthz /readyz /metrics port", "serving", ge=0, le=65535)
    cert_file: Path | None = _f(None, "serving certificate (PEM), reloaded on change", "serving")
    key_file: Path | None = _f(None, "its private key (PEM)", "serving")
    cert_reload_seconds: float = _f(
        10.0, "how often the certificate files are checked for a change", "serving", gt=0
    )
    dev: bool = _f(
        False,
        "try it without a cluster: a throwaway CA and localhost certificate (unless "
        "--cert-file), and the packaged example cluster state (unless --objects/--kubeconfig)",
        "serving",
    )
    max_body_bytes: int = _f(
        DEFAULT_MAX_BODY_BYTES, "largest accepted request body (413 above)", "serving", ge=1024
    )
    log_level: Literal["debug", "info", "warning", "error"] = _f("info", "log level", "serving")
    loop: Literal["auto", "uvloop", "asyncio"] = _f(
        "auto",
        "event loop: uvloop (auto: when installed; the image has it) or asyncio's own",
        "serving",
    )

    # ---- cluster state -----------------------------------------------------------------
    objects: Annotated[tuple[Path, ...], NoDecode] = _f(
        (),
        "cluster state from manifests (file or folder; repeatable) instead of a cluster",
        "cluster state",
    )
    kubeconfig: Path | None = _f(
        None, "kubeconfig (default: KUBECONFIG, ~/.kube/config, in-cluster)", "cluster state"
    )
    context: str | None = _f(None, "kubeconfig context", "cluster state")
    watch_timeout_seconds: int = _f(
        300,
        "the API server ends each watch after this; the watch is resumed at once",
        "cluster state",
        ge=1,
    )
    list_page_size: int = _f(
        500, "objects per page of a list (bounds one response's memory)", "cluster state", ge=1
    )
    live_read_timeout: float = _f(
        1.0,
        "seconds for the one read of a namespace never seen, on the admission path",
        "cluster state",
        gt=0,
    )

    # ---- injection ---------------------------------------------------------------------
    secret_selector: str = _f("", "label selector narrowing the registry secrets", "injection")
    private_registries: Annotated[tuple[str, ...], NoDecode] = _f(
        (),
        "registry host whose images warn when no credential matches (repeatable)",
        "injection",
        flag="--private-registry",
    )

    # ---- replication -------------------------------------------------------------------
    replication_enabled: bool = _f(
        True,
        "copy annotated source registries into the namespaces they select, and create "
        "missing copies at admission (a live cluster only)",
        "replication",
        flag="--replication",
    )
    release_namespace: str = _f(
        "default", "namespace the webhook runs in (holds the Lease)", "replication"
    )
    source_namespaces: Annotated[tuple[str, ...], NoDecode] = _f(
        (),
        "namespace holding project/cluster source registries (repeatable; default: the "
        "release namespace)",
        "replication",
        flag="--source-namespace",
    )
    replication_qps: float = _f(100.0, "copy writes per second (token bucket)", "replication", gt=0)
    replication_burst: int = _f(200, "copy writes allowed in a burst", "replication", ge=1)
    replication_workers: int = _f(8, "copy writes in flight at once", "replication", ge=1, le=64)
    replication_resync_seconds: float = _f(
        300.0,
        "full reconcile period: every source re-read, every namespace re-planned",
        "replication",
        gt=0,
    )
    replication_admission_timeout: float = _f(
        1.0,
        "seconds to create missing copies before a pod is answered (under the webhook's "
        "timeoutSeconds)",
        "replication",
        gt=0,
    )
    replication_request_timeout: float = _f(
        10.0, "read timeout of one controller request", "replication", gt=0
    )
    lease_duration_seconds: float = _f(
        15.0, "Lease: how long a silent leader keeps it", "replication", gt=0
    )
    lease_renew_deadline_seconds: float = _f(
        10.0, "Lease: a leader that cannot renew for this long stops leading", "replication", gt=0
    )
    lease_retry_period_seconds: float = _f(
        2.0, "Lease: how often candidates try and the leader renews", "replication", gt=0
    )

    # ---- stuck-pod recovery (replication/recovery.py) ---------------------------------
    recovery_mode: Literal["evict", "event", "off"] = _f(
        "evict",
        "stuck pods (ImagePullBackOff) that a registry secret now serves: evict owned ones so "
        "their controller recreates them injected, only report them (event), or off (a live "
        "cluster only)",
        "recovery",
    )
    recovery_evictions_per_minute: float = _f(
        10.0,
        "cluster-wide limit of stuck-pod evictions (a minute's worth at once)",
        "recovery",
        gt=0,
    )
    recovery_exclude_namespaces: Annotated[tuple[str, ...], NoDecode] = _f(
        (),
        "namespace whose stuck pods are never acted on (repeatable; the webhook's excluded "
        "namespaces: a replacement there would not be injected)",
        "recovery",
        flag="--recovery-exclude-namespace",
    )

    # ---- limits and shutdown (issue 11) ----------------------------------------------
    # Why these defaults: webhook/serve/limits.py (HTTP limits), webhook/serve/shutdown.py
    # (drain and shutdown), webhook/serve/offload.py (large reviews).
    max_header_bytes: int = _f(
        DEFAULT_MAX_HEADER_BYTES,
        "largest request line plus headers; over it: 414 or 431 (Go's 1 MiB)",
        "limits and shutdown",
        ge=4096,
    )
    header_read_timeout: float = _f(
        10.0,
        "seconds for a request's line and headers to arrive; then 408",
        "limits and shutdown",
        gt=0,
    )
    body_read_timeout: float = _f(
        10.0,
        "seconds for a body to arrive after its headers; then 408",
        "limits and shutdown",
        gt=0,
    )
    idle_timeout: float = _f(
        30.0,
        "seconds a keep-alive connection may stay idle between requests",
        "limits and shutdown",
        gt=0,
    )
    max_connections: int = _f(
        512,
        "open HTTPS connections; beyond them a new one gets 503",
        "limits and shutdown",
        ge=1,
    )
    max_inflight_body_bytes: int = _f(
        64 * 1024 * 1024,
        "request bytes (headers, bodies) held by all connections; the request that would "
        "cross it gets 503",
        "limits and shutdown",
        ge=1024,
    )
    drain_seconds: float = _f(
        5.0,
        "after SIGTERM: /readyz fails and requests are still served this long, then no new "
        "connection is accepted",
        "limits and shutdown",
        ge=0,
    )
    shutdown_timeout: float = _f(
        10.0,
        "after draining: seconds for requests in flight to finish",
        "limits and shutdown",
        gt=0,
    )
    large_review_bytes: int = _f(
        256 * 1024,
        "bodies this large are decided off the event loop",
        "limits and shutdown",
        ge=1024,
    )
    large_review_workers: int = _f(
        1,
        "large reviews decided at once, on a thread pool",
        "limits and shutdown",
        ge=1,
        le=16,
    )
    max_containers: int = _f(
        1000,  # core.injection.DEFAULT_MAX_CONTAINERS (config reads no core)
        "a pod with more containers is admitted unchanged, with a warning",
        "limits and shutdown",
        ge=1,
    )

    @field_validator("secret_selector")
    @classmethod
    def _valid_selector(cls, value: str) -> str:
        try:
            parse_selector(value)
        except SelectorError as exc:
            raise ValueError(f"secret_selector: {exc}") from exc
        return value

    @field_validator(
        "private_registries",
        "source_namespaces",
        "objects",
        "recovery_exclude_namespaces",
        mode="before",
    )
    @classmethod
    def _split_lists(cls, value: object) -> object:
        """Environment variables hold lists comma-separated: PSI_PRIVATE_REGISTRIES=a,b."""
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @model_validator(mode="after")
    def _body_budget(self) -> Settings:  # limits and shutdown (issue 11)
        if self.max_inflight_body_bytes < self.max_body_bytes:
            raise ValueError(
                "max_inflight_body_bytes must be at least max_body_bytes: the largest "
                "accepted body must fit"
            )
        return self

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        if self.cert_file is None and not self.dev:
            raise ValueError(
                "no serving certificate: give --cert-file and --key-file "
                "(PSI_CERT_FILE/PSI_KEY_FILE), or --dev for a throwaway one"
            )
        if self.objects and self.kubeconfig is not None:
            raise ValueError("--objects and --kubeconfig are exclusive: pick one cluster state")
        if not (
            0
            < self.lease_retry_period_seconds
            < self.lease_renew_deadline_seconds
            < self.lease_duration_seconds
        ):
            raise ValueError(
                "leader election needs lease_retry_period_seconds < "
                "lease_renew_deadline_seconds < lease_duration_seconds"
            )
        return self


# ---- flags, generated from the fields ---------------------------------------------------


def flag_of(name: str, info: FieldInfo) -> str:
    extra = info.json_schema_extra
    flag = extra.get("flag") if isinstance(extra, dict) else None
    return str(flag) if flag else "--" + name.replace("_", "-")


def env_of(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _group_of(info: FieldInfo) -> str:
    extra = info.json_schema_extra
    group = extra.get("group") if isinstance(extra, dict) else None
    return str(group) if group in _GROUPS else _GROUPS[-1]


def _scalar(annotation: Any) -> tuple[Any, bool]:
    """(the element type, whether the field is a list) of an annotation."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _scalar(typing.get_args(annotation)[0])
    if origin is tuple:
        return typing.get_args(annotation)[0], True
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _scalar(inner[0])
    return annotation, False


def add_arguments(
    parser: argparse.ArgumentParser,
    fields: Iterable[str] | None = None,
    *,
    environment: bool = True,
) -> None:
    """One flag per Settings field (or per one of `fields`); no default here, so that an
    unset flag leaves the environment alone. `environment=False` for a command that reads
    no PSI_* variable (mutate): the help then names none."""
    names = list(Settings.model_fields) if fields is None else list(fields)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name in names:
        info = Settings.model_fields[name]
        kind, repeated = _scalar(info.annotation)
        default = info.default
        if default in (None, "", ()):
            shown = "none"
        else:
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else str(default)
        where = f"{env_of(name)}; " if environment else ""
        text = f"{info.description} [{where}default: {shown}]"
        text = text.replace("%", "%%")
        flag = flag_of(name, info)
        title = _group_of(info)
        group = groups.get(title) or groups.setdefault(title, parser.add_argument_group(title))
        if kind is bool:
            group.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text
            )
        elif repeated:
            group.add_argument(flag, dest=name, type=kind, action="append", help=text)
        elif typing.get_origin(kind) is Literal:
            group.add_argument(flag, dest=name, choices=typing.get_args(kind), help=text)
        else:
            group.add_argument(flag, dest=name, type=kind, help=text)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Flags override PSI_* environment variables, which override the defaults."""
    given = {k: v for k, v in vars(args).items() if v is not None and k in Settings.model_fields}
    return Settings(**given)
