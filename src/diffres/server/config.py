"""All service settings, from `DIFFRES_*` environment variables, in one pydantic-settings object."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from diffres.models import MODELS_DIR
from diffres.server.repository import PolicyError, VersionPolicy, parse_policies

MiB = 1024 * 1024


class Settings(BaseSettings):
    """Every knob of the service; `DIFFRES_<FIELD>` in the environment overrides the default."""

    model_config = SettingsConfigDict(env_prefix="DIFFRES_", extra="ignore", protected_namespaces=())

    model_dir: Path = Field(
        default=MODELS_DIR, description="Model repository: Triton's layout NAME/N/model.onnx (version N; "
                                        "config.pbtxt and labels.txt beside the versions are fine) and flat "
                                        "NAME.onnx (version 1); default: the models shipped in the package.")
    version_policy: str = Field(
        default="", description="Versions to serve, per model: `MODEL=POLICY` entries separated by `;` or spaces, "
                                "POLICY `latest` / `latest:N` (the N highest versions), `all`, or versions `1,3`; "
                                "`*=POLICY` for the other models. A model's entry wins over its config.pbtxt "
                                "version_policy; default: config.pbtxt's, else latest:1.")
    model_poll_s: float = Field(
        default=0.0, ge=0, description="Seconds between scans of the model repository (a new or changed version "
                                       "loads beside the old one, checked, then takes traffic); 0: off (SIGHUP and "
                                       "the repository API still reload).")
    default_model: str = Field(default="keywords", description="Model used when a request names none.")
    host: str = Field(default="127.0.0.1", description="Bind address of `diffres serve`.")
    workers: int = Field(
        default=1, ge=1, le=64,
        description="Server processes of `diffres serve` (uvicorn workers sharing the port), each with its own models, "
                    "batchers and event loop; the CPUs are split between them (each gets DIFFRES_CPUS, default CPUs / "
                    "workers). 1 (default): one process, its calls in threads (docs/performance.md compares them). "
                    "With several, /metrics and /readyz answer for the worker that takes the request, and "
                    "DIFFRES_GRPC_PORT is refused.")
    port: int = Field(default=8000, ge=0, le=65535, description="Bind port of `diffres serve`.")
    grpc_port: int | None = Field(
        default=None, ge=0, le=65535,
        description="Port of the Open Inference Protocol v2 over gRPC (inference.GRPCInferenceService, Triton's "
                    "and KServe's clients; Triton uses 8001) on DIFFRES_HOST; unset or empty: off. Messages up to "
                    "DIFFRES_MAX_TENSOR_BYTES; the same models, batchers, limits, keys and metrics as HTTP.")
    grpc_max_calls: int = Field(
        default=256, ge=1, description="gRPC calls (unary calls and open streams) at once; beyond, new ones get "
                                       "RESOURCE_EXHAUSTED. With DIFFRES_MAX_TENSOR_BYTES it bounds the memory of "
                                       "received messages (gRPC reads a message whole before the service sees it).")
    providers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated onnxruntime execution providers; empty: CUDA first when available, then CPU.")
    intra_op_threads: int = Field(
        default=0, ge=0, description="onnxruntime intra-op threads per call; 0: CPUs / concurrent calls (on CPU "
                                     "with both 0: 1 thread, one call per CPU), on GPU onnxruntime's default.")
    inter_op_threads: int = Field(default=1, ge=1, description="onnxruntime inter-op threads.")
    ort_spinning: bool = Field(
        default=False, description="Let idle onnxruntime threads busy-wait between calls; off (default) leaves the "
                                   "cores to HTTP and decoding (much better when other processes share the CPUs; "
                                   "within noise on an idle machine).")
    max_upload_bytes: int = Field(
        default=512 * MiB, ge=1024, description="Largest request body (all files together); 413 while streaming.")
    max_json_bytes: int = Field(
        default=4 * MiB, ge=1024, description="Largest JSON body for /v2 infer (parsed floats cost ~8x the body); "
                                              "larger inputs: the binary tensor extension.")
    max_tensor_bytes: int = Field(
        default=64 * MiB, ge=1024, description="Largest /v2 infer body with binary tensors "
                                               "(Inference-Header-Content-Length).")
    v2_max_row_s: float = Field(
        default=60.0, gt=0, description="Longest /v2 waveform row (seconds at the model's rate); it runs in one "
                                        "call, so 413 beyond: send long audio to /v1, which windows it.")
    v2_body_budget_bytes: int = Field(
        default=256 * MiB, ge=1024, description="/v2 request bodies held in memory at once (JSON counted 8x); "
                                                "503 with Retry-After beyond.")
    max_duration_s: float = Field(
        default=7200.0, gt=0, description="Longest accepted audio; 413 beyond (never truncated).")
    min_duration_s: float | None = Field(
        default=None, ge=0, description="Shortest accepted audio; unset: one analysis window of the model.")
    long_audio_s: float | None = Field(
        default=None, gt=0, description="Longer audio is windowed; unset: 3 x the model's clip_seconds.")
    window_s: float | None = Field(
        default=None, gt=0, description="Window length for long audio; unset: the model's clip_seconds.")
    window_hop_s: float | None = Field(
        default=None, gt=0, description="Hop between windows (snapped to whole frames); unset: the model's "
                                        "window_hop_s (chosen with event_windows on validation data).")
    event_windows: int | None = Field(
        default=None, ge=1, le=64, description="Consecutive windows a label must hold to make an event; unset: the "
                                               "model's (chosen on validation data for its window_hop_s).")
    batch_size: int = Field(
        default=16, ge=1, le=1024, description="Most inputs per onnxruntime call (and windows in flight per request).")
    cpus: int = Field(
        default=0, ge=0, description="CPUs onnxruntime may use; 0: what the cgroup quota and affinity allow "
                                     "(each Ray replica sets its reservation).")
    concurrent_calls: int = Field(
        default=0, ge=0, le=64, description="onnxruntime calls per model at once, each in its own thread; 0: on "
                                            "CPU, one single-threaded call per CPU (see intra_op_threads), on GPU one.")
    batch_wait_ms: float = Field(
        default=5.0, ge=0, description="How long the batcher waits for more inputs before running a partial batch.")
    batch_max_padding: float = Field(
        default=0.1, ge=0, lt=1, description="Most zero padding per onnxruntime call (share of its samples) "
                                             "when merging inputs of different lengths.")
    batch_grid_steps: int = Field(
        default=8, ge=1, le=64, description="Padded lengths per doubling (a geometric grid anchored at the "
                                            "window length): bounds padding and the shapes onnxruntime sees.")
    batch_max_samples: int = Field(
        default=0, ge=0, description="Most padded samples (rows x length) per call; 0: batch_size windows.")
    queue_limit: int = Field(
        default=256, ge=1, description="Work units (window-length rows) queued or running per model; 503 beyond.")
    max_long_jobs: int = Field(
        default=4, ge=1, description="Windowed (long) uploads decoded and run at once per model; more wait in line.")
    long_job_queue: int = Field(
        default=64, ge=0, description="Long uploads waiting for a turn per model; 503 beyond.")
    max_batch_files: int = Field(default=32, ge=1, description="Most files in one /v1/classify/batch request.")
    retry_after_s: int = Field(default=1, ge=0, description="Retry-After seconds sent with 503.")
    warmup: bool = Field(default=True, description="Run each model on dummy input before readiness turns true.")
    shutdown_timeout_s: int = Field(default=30, ge=1, description="Grace period for in-flight requests on SIGTERM.")
    # HTTP server limits (server/http_guard.py, server/middleware.py).
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="Time a connection may take to send a request's headers; then closed.")
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="Longest pause between chunks of a request body; then 408.")
    keep_alive_timeout_s: float = Field(default=5.0, gt=0, description="Idle keep-alive connections close after this.")
    max_header_bytes: int = Field(
        default=16 * 1024, ge=1024, description="Largest request line plus headers; 431 beyond.")
    max_connections: int = Field(
        default=256, ge=1, description="Open connections at once; beyond, new ones get 503 and are closed.")
    # Live streaming over WebSocket (/v1/stream, server/stream.py).
    stream_slots: int = Field(
        default=2, ge=1, description="Work units (windows in flight) one stream holds for its whole life; a stream "
                                     "is refused (close 1013) when the model has no room for them.")
    stream_idle_timeout_s: float = Field(
        default=30.0, gt=0, description="A stream that sends nothing for this long is closed (close code 4408).")
    stream_max_chunk_bytes: int = Field(
        default=1 * MiB, ge=64, description="Largest binary message of a stream; larger ones close it (1009).")
    log_level: str = Field(default="INFO", description="Log level.")
    log_format: Literal["auto", "text", "json"] = Field(
        default="auto", description="Logs as text lines for people or JSON lines for machines; auto: text when "
                                    "stderr is a terminal, JSON otherwise (the image sets json).")
    # Browser apps and access control (server/access.py); both off by default.
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated origins whose browser apps may call the API (CORS); empty: CORS off; "
                    "`*`: any origin.")
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated API keys; when set, /v1 and /v2 (not /v2/health) need "
                    "`Authorization: Bearer KEY` or `X-API-Key: KEY`, else 401.")
    admin_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated admin keys: POST /v2/repository/models/{model}/load and /unload (and gRPC "
                    "RepositoryModelLoad/Unload) need one (same headers as API keys); they also work as API keys. "
                    "Unset: those calls are refused (403) unless DIFFRES_ADMIN_LOOPBACK.")
    admin_loopback: bool = Field(
        default=False, description="Allow load and unload without an admin key, for a server bound to loopback only "
                                   "(DIFFRES_HOST 127.0.0.1, ::1 or localhost); refused at start-up otherwise.")
    metrics_require_key: bool = Field(
        default=False, description="With API keys set, /metrics needs a key too (probes always stay open).")
    # Ray Serve (`make serve-ray`, server/ray_main.py); ignored by the plain service.
    ray_replicas: int = Field(default=2, ge=1, le=256, description="Ray Serve replicas (each its own sessions).")
    ray_gpus_per_replica: float = Field(
        default=0.0, ge=0, description="GPUs each Ray replica reserves (1: one GPU each; 0: CPU only).")
    ray_metrics_port: int = Field(
        default=8080, ge=1, le=65535, description="Port of Ray's Prometheus endpoint (every replica's metrics).")

    @property
    def public_url(self) -> str:
        """Where a person on this machine reaches the service (a wildcard bind address shown as loopback)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}/"

    @property
    def version_policies(self) -> dict[str, VersionPolicy]:
        """DIFFRES_VERSION_POLICY parsed (checked when the settings are read)."""
        return parse_policies(self.version_policy)

    @field_validator("providers", "cors_origins", "api_keys", "admin_keys", mode="before")
    @classmethod
    def _split_providers(cls, value: object) -> object:
        """Accept `CUDAExecutionProvider,CPUExecutionProvider` (or `key1,key2`) as well as a list."""
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value

    @field_validator("grpc_port", mode="before")
    @classmethod
    def _blank_port_is_off(cls, value: object) -> object:
        """`DIFFRES_GRPC_PORT=` (set but empty, as templates leave it) means off, like unset."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"):
            raise ValueError("log_level must be one of CRITICAL, ERROR, WARNING, INFO, DEBUG")
        return value.upper()

    @field_validator("version_policy")
    @classmethod
    def _readable_policy(cls, value: str) -> str:
        try:
            parse_policies(value)
        except PolicyError as exc:
            raise ValueError(f"version_policy {exc}") from exc
        return value

    @field_validator("admin_loopback")
    @classmethod
    def _loopback_admin(cls, value: bool, info: ValidationInfo) -> bool:
        """Keyless repository control only where nobody else can connect (host is read before this field)."""
        host = info.data.get("host", "")
        if value and not is_loopback(host):
            raise ValueError(f"admin_loopback needs a loopback bind address (DIFFRES_HOST=127.0.0.1, ::1 or "
                             f"localhost), not {host!r}: set DIFFRES_ADMIN_KEYS to load and unload models "
                             "from elsewhere")
        return value

    @model_validator(mode="after")
    def _check_workers(self) -> Settings:
        if self.workers > 1 and self.grpc_port is not None:
            raise ValueError("DIFFRES_GRPC_PORT needs DIFFRES_WORKERS=1: worker processes would each bind the gRPC "
                             "port (run one process, or gRPC on a separate deployment)")
        return self

    @model_validator(mode="after")
    def _check_windows(self) -> Settings:
        if self.window_s and self.window_hop_s and self.window_hop_s > self.window_s:
            raise ValueError("window_hop_s must not exceed window_s (windows would leave gaps)")
        if self.window_s and self.long_audio_s and self.long_audio_s < self.window_s:
            raise ValueError("long_audio_s must be at least window_s")
        return self


def is_loopback(host: str) -> bool:
    """A bind address only this machine can reach (a name other than localhost is not trusted to be one)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def environment(settings: Settings) -> dict[str, str]:
    """The `DIFFRES_*` variables that give `settings` again (the fields set explicitly): how settings from the
    command line reach worker processes, which read theirs from the environment."""
    env = {}
    for name in sorted(settings.model_fields_set):
        value = getattr(settings, name)
        if isinstance(value, list):
            text = ",".join(v.get_secret_value() if isinstance(v, SecretStr) else str(v) for v in value)
        elif isinstance(value, SecretStr):
            text = value.get_secret_value()
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = "" if value is None else str(value)
        env[f"DIFFRES_{name.upper()}"] = text
    return env


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, read once."""
    return Settings()
