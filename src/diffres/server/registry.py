"""Model registry: the repository's models and versions, each loaded version with its OnnxModel, its
pipeline (window plan, limits) and its own micro-batcher; versions load, are checked, swap and drain.

The life of a version (docs/repository.md): found on disk (server/repository.py: Triton's layout,
the version policy) -> LOADING: a session opened beside the versions serving, the contract read, a
probe inference, warm-up, all in a worker thread -> READY: takes traffic -> UNLOADING: out of
service; requests and streams that began on it hold it (`LoadedModel.hold`) and finish there; then
its batcher drains and closes and its session is released -> gone. A file that fails a check is
refused with its reason while what served before keeps serving. Every change is `reconcile` (start-up,
polling, SIGHUP, the repository API, Ray's reconfigure), one at a time.

Loading starts after the server does, so /healthz answers at once while /readyz stays 503 until the
start-up load is done (first calls allocate and are slow). A model that failed at start-up and serves
nothing makes readiness `degraded`; later failures are reported (index, /v1/models, logs, metrics)
but never take a serving pod out of rotation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any


from diffres.errors import ModelNotFound, Unavailable
from diffres.schemas import VersionState
from diffres.server.config import Settings
from diffres.server.loaded import LoadedModel, LoadFailed, load_checked, public_reason, release_memory
from diffres.server.metrics import Metrics
from diffres.server.repository import RepoModel, Stamp, VersionFile, scan

log = logging.getLogger(__name__)



@dataclass
class ModelEntry:
    """What the registry knows of one model: versions serving, loading, draining, and why others are not."""

    name: str
    serving: dict[int, LoadedModel] = field(default_factory=dict)
    loading: set[int] = field(default_factory=set)
    draining: list[LoadedModel] = field(default_factory=list)
    failures: dict[int, tuple[Stamp, str]] = field(default_factory=dict)  # version -> (its file then, why)
    unloaded: bool = False  # by request: polls leave it alone until it is loaded again
    problem: str = ""  # model-level (an unreadable config.pbtxt)

    @property
    def default(self) -> LoadedModel | None:
        """What a request that names no version gets: the highest version serving."""
        return self.serving[max(self.serving)] if self.serving else None

    def busy(self) -> bool:
        return bool(self.serving or self.loading or self.draining)


def _state(entry: ModelEntry, repo: RepoModel | None, version: int, pending: str) -> VersionState:
    """One version's state for the index and /v1/models (`pending`: why a wanted version is not loaded yet)."""
    failure = entry.failures.get(version)
    if (model := entry.serving.get(version)) is not None:
        reason = "a changed file is loading" if version in entry.loading else (
            f"serving the earlier file; the new one was refused: {failure[1]}" if failure else "")
        return VersionState(version=version, state="READY", reason=reason, model_version=model.info.version)
    if version in entry.loading:
        return VersionState(version=version, state="LOADING")
    if (old := next((m for m in entry.draining if m.version == version), None)) is not None:
        return VersionState(version=version, state="UNLOADING", reason="finishing its requests and streams",
                            model_version=old.info.version)
    if failure is not None:
        reason = f"load failed: {failure[1]}"
    elif entry.unloaded:
        reason = "unloaded"
    elif repo is None or version not in repo.versions:
        reason = "removed from the repository"
    elif version not in repo.wanted:
        reason = f"not selected by the version policy {repo.policy}"
    else:
        reason = entry.problem or pending
    return VersionState(version=version, state="UNAVAILABLE", reason=reason)


class ModelRegistry:
    """The models of `model_dir` by name, their versions by number; `get` for requests, `reconcile`,
    `load` and `unload` for changes (the HTTP and gRPC repository routes share them), `index` to list."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.entries: dict[str, ModelEntry] = {}
        self.repository: dict[str, RepoModel] = {}
        self.ready = False
        self.status = "loading"
        self._ready_event = asyncio.Event()
        self._closing = False
        self._started = False
        self._lock = asyncio.Lock()
        self._seen: dict[tuple[str, int], Stamp] = {}  # file stamps at the last scan (polls load settled files)
        self._start_failures: set[str] = set()
        self._draining: set[asyncio.Task[None]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()  # polling, SIGHUP reloads

    # ------------------------------------------------------------------ serving

    @property
    def models(self) -> dict[str, LoadedModel]:
        """Each model that serves, by name: its default (highest) version."""
        return {name: model for name, e in sorted(self.entries.items()) if (model := e.default) is not None}

    @property
    def failed(self) -> dict[str, str]:
        """Models that failed at start-up and still serve nothing, with why (readiness says degraded)."""
        out = {}
        for name in sorted(self._start_failures):
            entry = self.entries.get(name)
            if entry is not None and not entry.serving and not entry.unloaded and name in self.repository:
                out[name] = entry.problem or "; ".join(
                    f"version {v}: {why}" for v, (_, why) in sorted(entry.failures.items())) or "no version to serve"
        return out

    @property
    def healthy(self) -> bool:
        """Ready, and every model that failed at start-up serves by now."""
        return self.ready and not self.failed

    async def wait_ready(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._ready_event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def get(self, name: str | None, version: int | str | None = None) -> LoadedModel:
        """The named (or default) model at `version` (a number, its text, or a build identity; none: the
        highest serving); 503 before readiness, 404 for a model or version that does not serve."""
        if not self.ready:
            raise Unavailable(f"not ready: {self.status}", headers={"Retry-After": str(self.settings.retry_after_s)})
        name = name or self.settings.default_model
        entry = self.entries.get(name)
        if entry is None or not entry.serving:
            if name in self.repository:
                raise ModelNotFound(f"model '{name}' has no version ready ({self._why_not(name)})")
            raise ModelNotFound(f"unknown model '{name}'; available: {', '.join(sorted(self.models))}")
        if version is None or version == "":
            return entry.serving[max(entry.serving)]
        text = str(version)
        model = (entry.serving.get(int(text)) if text.isdigit() else
                 next((m for m in entry.serving.values() if m.info.version == text), None))
        if model is None:
            ready = sorted(entry.serving)
            raise ModelNotFound(f"model '{name}' has version{'s' if len(ready) > 1 else ''} "
                                f"{', '.join(map(str, ready))} ready, not '{text}'")
        return model

    def ready_versions(self, name: str) -> list[int]:
        entry = self.entries.get(name)
        return sorted(entry.serving) if entry is not None else []

    def _why_not(self, name: str) -> str:
        states = self.version_states(name)
        return "; ".join(f"version {s.version}: {s.state.lower()} ({s.reason})" for s in states) or "no version"

    def version_states(self, name: str) -> list[VersionState]:
        """Every version of a model the registry or the repository knows, lowest first."""
        entry, repo = self.entries.get(name) or ModelEntry(name), self.repository.get(name)
        versions = (set(repo.versions if repo else ()) | set(entry.serving) | entry.loading | set(entry.failures)
                    | {m.version for m in entry.draining})
        pending = ("not loaded yet: the next poll loads it once the file is unchanged for one interval"
                   if self.settings.model_poll_s > 0 else "not loaded yet: load the model, send SIGHUP, or set "
                   "DIFFRES_MODEL_POLL_S")
        return [_state(entry, repo, v, pending) for v in sorted(versions)]

    async def rescan(self) -> None:
        """Read the repository again for listing (a version just dropped in shows as UNAVAILABLE); skipped while
        a change runs, which is then what the index shows (LOADING)."""
        if not self._lock.locked():
            async with self._lock:
                self.repository = await asyncio.to_thread(scan, self.settings.model_dir,
                                                          self.settings.version_policies)

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """The repository index as the OIP repository extension answers it: one entry per model version
        (name, version, state, reason); a model with no version at all gets one entry without a version."""
        rows = []
        for name in sorted(set(self.repository) | {n for n, e in self.entries.items() if e.busy()}):
            states = self.version_states(name)
            if not states:
                repo = self.repository.get(name)
                why = (repo.problem if repo else "") or "no version in the repository"
                rows.append({"name": name, "state": "UNAVAILABLE", "reason": why})
            rows += [{"name": name, "version": str(s.version), "state": s.state, "reason": s.reason} for s in states]
        return [r for r in rows if r["state"] == "READY"] if ready_only else rows

    # ------------------------------------------------------------------ changes

    async def start(self) -> None:
        """The start-up load, off the event loop; then readiness, and polling when DIFFRES_MODEL_POLL_S is set."""
        try:
            failures = await self.reconcile(trigger="start")
        except Exception as exc:
            log.exception("loading models failed")
            self.status = f"loading models failed: {type(exc).__name__}"
            return
        if self._closing:
            return
        self._start_failures = set(failures)
        self._started = True
        self._refresh()
        if self.ready and self.settings.default_model not in self.models:
            log.warning("default model %s is not loaded; requests must name a model", self.settings.default_model)
        if self.settings.model_poll_s > 0:
            self._spawn(self._poll(), "poll-models")

    def request_reload(self, trigger: str = "sighup") -> None:
        """Reconcile soon, in the background (a signal handler cannot wait)."""
        if not self._closing:
            self._spawn(self.reconcile(trigger=trigger), f"reload-{trigger}")

    def _spawn(self, work: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _poll(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.settings.model_poll_s)
            try:
                await self.reconcile(trigger="poll")
            except Exception:  # a poll that fails must not end polling
                log.exception("polling the model repository failed")

    async def reconcile(self, names: Collection[str] | None = None, *, trigger: str,
                        force: bool = False) -> dict[str, str]:
        """Bring models (all, or `names`) to what the repository and their version policies say: new and
        changed versions load beside the old ones and take over once checked; versions the policy no
        longer wants leave once every wanted one serves. `force` (an explicit load) also retries files
        that failed before and loads a model that was unloaded. Returns the failures, by model."""
        async with self._lock:
            if self._closing:
                return {}
            self.repository = await asyncio.to_thread(scan, self.settings.model_dir, self.settings.version_policies)
            targets = sorted(set(self.repository) | set(self.entries)) if names is None else list(names)
            failures = {}
            for name in targets:
                if why := await self._reconcile_model(name, trigger, force):
                    failures[name] = why
            self._seen = {(n, v): f.stamp for n, m in self.repository.items() for v, f in m.versions.items()}
            self._refresh()
        if trigger not in ("poll", "start"):
            rows = self.index()
            log.info("repository reconciled (%s): %s; %d version(s) unavailable", trigger, ", ".join(
                f"{r['name']} {r['version']} {r['state']}" for r in rows if r["state"] != "UNAVAILABLE") or "nothing "
                "serves", sum(r["state"] == "UNAVAILABLE" for r in rows))
        return failures

    async def _reconcile_model(self, name: str, trigger: str, force: bool) -> str:
        """One model to its policy; '' or why (some of) it could not be served."""
        repo, entry = self.repository.get(name), self.entries.get(name)
        if repo is None:  # gone from the repository: nothing of it serves any more
            if entry is not None:
                self._retire_all(entry)
            return ""
        entry = self.entries.setdefault(name, ModelEntry(name))
        entry.unloaded = entry.unloaded and not force
        entry.problem = repo.problem
        entry.failures = {v: f for v, f in entry.failures.items() if v in repo.versions}
        if entry.unloaded or repo.problem:
            return repo.problem
        failures = []
        for version in sorted(repo.wanted, reverse=True):  # newest first
            file = repo.versions[version]
            if (current := entry.serving.get(version)) is not None and current.stamp == file.stamp:
                continue
            known = entry.failures.get(version)
            if not force and known is not None and known[0] == file.stamp:
                continue  # refused before and unchanged since: only an explicit load retries it
            if trigger == "poll" and self._seen.get((name, version)) != file.stamp:
                continue  # new or changed since the last poll: maybe still being written; next poll
            if why := await self._load(entry, file):
                failures.append(f"version {version}: {why}")
        if not repo.wanted:
            failures.append(f"no version on disk matches the version policy {repo.policy}")
        elif all(v in entry.serving for v in repo.wanted):  # else the others stay, in place of what failed
            for version in [v for v in entry.serving if v not in repo.wanted]:
                self._retire(entry, entry.serving.pop(version))
        if failures and not entry.serving:
            await self._fall_back(entry, repo, force)
        return "; ".join(failures)

    async def _fall_back(self, entry: ModelEntry, repo: RepoModel, force: bool) -> None:
        """Nothing of the model serves because what the policy wants was refused (a fresh process, or a
        replica started after a bad file was dropped in): serve the highest other version on disk that loads."""
        for version in sorted(set(repo.versions) - repo.wanted, reverse=True):
            file, known = repo.versions[version], entry.failures.get(version)
            if (force or known is None or known[0] != file.stamp) and not await self._load(entry, file):
                log.warning("model %s: serving version %d in place of the refused version(s) %s", entry.name,
                            version, ", ".join(map(str, sorted(repo.wanted))))
                return

    async def _load(self, entry: ModelEntry, file: VersionFile) -> str:
        """Load and check one version in a worker thread; once checked it takes traffic (a version it
        replaces, an older file of the same number, is retired). '' or why it was refused."""
        entry.loading.add(file.version)
        started = time.perf_counter()
        try:
            model = await asyncio.to_thread(load_checked, file, entry.name, self.settings, self.metrics)
        except Exception as exc:  # a bad file must never take down what serves
            why = public_reason(exc, file.path)
            entry.failures[file.version] = (file.stamp, why)
            self.metrics.observe_load(entry.name, "failed", time.perf_counter() - started)
            log.error("model %s version %d refused: %s", entry.name, file.version, why)
            return why
        finally:
            entry.loading.discard(file.version)
        seconds = time.perf_counter() - started
        self.metrics.observe_load(entry.name, "loaded", seconds)
        entry.failures.pop(file.version, None)
        model.batcher.start()
        if (old := entry.serving.get(file.version)) is not None:
            self._retire(entry, old)
        entry.serving[file.version] = model
        log.info("model %s loaded: version %d, %d labels, %d Hz, providers %s, %d call(s) at once of %d thread(s), "
                 "build %s, %.2f s", entry.name, file.version, len(model.info.labels), model.info.sample_rate,
                 model.model.providers, model.layout.calls, model.layout.threads, model.info.version, seconds)
        return ""

    async def load(self, name: str) -> None:
        """The repository API's load: (re)load a model to its policy, retrying files that failed before;
        answered once the new versions serve (the old ones drain in the background); 404 when the repository
        has no such model, 400 (LoadFailed) when a version is refused."""
        failures = await self.reconcile([name], trigger="load", force=True)
        if name not in self.repository:
            raise ModelNotFound(f"no model '{name}' in the repository")
        if name in failures:
            serving = sorted(self.entries[name].serving)
            kept = f"; still serving version(s) {', '.join(map(str, serving))}" if serving else ""
            raise LoadFailed(f"failed to load '{name}': {failures[name]}{kept}")

    async def unload(self, name: str) -> None:
        """The repository API's unload: every version out of service (requests and streams on it finish), and
        it stays unloaded, polls included, until loaded again; 404 for a model the registry does not know."""
        draining = set(self._draining)
        async with self._lock:
            entry = self.entries.get(name)
            if entry is None:
                raise ModelNotFound(f"no model '{name}' in the repository")
            entry.unloaded = True
            self._retire_all(entry)
            self._refresh()
        log.info("model %s unloaded by request", name)
        await self._wait_drained(self._draining - draining)

    async def drained(self, timeout: float) -> bool:
        """Wait until every version taken out of service has been released; False on timeout."""
        if not self._draining:
            return True
        _, pending = await asyncio.wait(set(self._draining), timeout=timeout)
        return not pending

    async def _wait_drained(self, tasks: set[asyncio.Task[None]]) -> None:
        """Unload answers once the versions taken out are released (memory back), or after
        DIFFRES_SHUTDOWN_TIMEOUT_S: a long stream may hold one longer, its state UNLOADING until it ends."""
        if tasks:
            await asyncio.wait(tasks, timeout=self.settings.shutdown_timeout_s)

    def _retire_all(self, entry: ModelEntry) -> None:
        for version in list(entry.serving):
            self._retire(entry, entry.serving.pop(version))

    def _retire(self, entry: ModelEntry, model: LoadedModel) -> None:
        """Out of service now (no new request gets it); drained and released in the background."""
        entry.draining.append(model)
        task = asyncio.get_running_loop().create_task(self._drain(entry, model),
                                                      name=f"drain-{entry.name}-{model.version}")
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    async def _drain(self, entry: ModelEntry, model: LoadedModel) -> None:
        started = time.perf_counter()
        try:
            await model.retire()
        finally:
            entry.draining.remove(model)
            self.metrics.observe_unload(entry.name, time.perf_counter() - started)
            log.info("model %s version %d unloaded after %.2f s (build %s)", entry.name, model.version,
                     time.perf_counter() - started, model.info.version)
            del model
            if not entry.busy() and entry.name not in self.repository:
                self.entries.pop(entry.name, None)
            await asyncio.to_thread(release_memory)

    def _refresh(self) -> None:
        """Metrics and readiness after a change: ready while some model serves (after the start-up load)."""
        self.metrics.set_models([(m.info, m.version) for e in self.entries.values() for m in e.serving.values()])
        if not self._started or self._closing:
            return
        serving = self.models
        self.ready = bool(serving)
        self.metrics.ready.set(1 if serving else 0)
        if not serving:
            failed = sum(1 for e in self.entries.values() if e.failures or e.problem)
            status = (f"no model could be loaded from the model folder ({failed} failed)"
                      if not self._ready_event.is_set() else "no model loaded (all unloaded or removed)")
            if status != self.status:
                log.error(status)
            self.status = status
            return
        self.status = "ready"
        if not self._ready_event.is_set():
            self._ready_event.set()
            log.info("ready: %d model%s (%s), demo at %s", len(serving), "" if len(serving) == 1 else "s",
                     ", ".join(serving), self.settings.public_url)

    async def close(self) -> None:
        """Stop polling, let a change in progress finish, drain every batcher (queued inputs still run)."""
        self._closing = True
        self.ready = False
        self.metrics.ready.set(0)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        async with self._lock:
            models = [m for e in self.entries.values() for m in (*e.serving.values(), *e.draining)]
            await asyncio.gather(*(m.batcher.close() for m in models))
        for task in list(self._draining):
            task.cancel()
        await asyncio.gather(*self._draining, return_exceptions=True)
