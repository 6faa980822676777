"""Static checks of the shipping pieces (Dockerfiles, scripts, compose, load test): no docker needed.

The real checks (build, run, classify) are docker/smoke.sh and `make loadtest`; these catch the
regressions that are cheap to see without them: torch creeping into the image, the image running
as root, a script losing its error handling, the load test's statistics going wrong.
"""

from __future__ import annotations

import json
import py_compile
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = [ROOT / "Dockerfile", ROOT / "docker" / "Dockerfile.gpu"]
SCRIPTS = sorted((ROOT / "docker").glob("*.sh"))


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_is_multistage_nonroot_with_readiness_healthcheck(path: Path) -> None:
    ins = _instructions(path)
    words = [w for w, _ in ins]
    assert words[0] == "ARG" and ins[0][1].startswith("BASE_IMAGE="), "base image must be a build ARG"
    froms = [a for w, a in ins if w == "FROM"]
    assert len(froms) == 2 and froms[0].endswith("AS builder"), "builder + runtime stages"
    user = [a for w, a in ins if w == "USER"]
    assert user and user[-1] not in ("root", "0"), "runtime must not run as root"
    health = " ".join(a for w, a in ins if w == "HEALTHCHECK")
    assert "/readyz" in health and "urllib" in health
    exposed = {port for w, a in ins if w == "EXPOSE" for port in a.split()}
    assert {"8000", "8001"} <= exposed, "HTTP and OIP gRPC ports"
    env = " ".join(a for w, a in ins if w == "ENV")
    assert "DIFFRES_HOST=0.0.0.0" in env and "DIFFRES_MODEL_DIR=" in env
    assert "DIFFRES_GRPC_PORT=8001" in env, "gRPC on in the image"
    runs = " ".join(a for w, a in ins if w == "RUN")
    assert "--mount=type=secret,id=pipca" in runs, "pip must get the CA bundle as a build secret"
    assert "torch" not in runs and ".[" not in runs, "serving image: no extras, no torch"
    assert "COPY --from=builder /opt/venv /opt/venv" in {f"{w} {a}" for w, a in ins}


def test_cpu_image_uses_debian_slim_and_gpu_image_onnxruntime_gpu() -> None:
    cpu = (ROOT / "Dockerfile").read_text()
    gpu = (ROOT / "docker" / "Dockerfile.gpu").read_text()
    assert "ARG BASE_IMAGE=debian:bookworm-slim" in cpu
    assert "ARG BASE_IMAGE=nvidia/cuda:" in gpu and "onnxruntime-gpu" in gpu and "--no-deps" in gpu


def test_one_gpu_base_image_name() -> None:
    """The Dockerfile's ARG is the one home; build.sh reads it, and every other mention agrees."""
    import re

    gpu = (ROOT / "docker" / "Dockerfile.gpu").read_text()
    [base] = re.findall(r"^ARG BASE_IMAGE=(\S+)", gpu, re.MULTILINE)
    for path in [ROOT / "docker" / "build.sh", ROOT / "docker" / "compose.yaml", ROOT / "README.md"]:
        names = set(re.findall(r"nvidia/cuda:[\w.-]+", path.read_text()))
        assert names <= {base}, f"{path.name} names {names - {base}}, Dockerfile.gpu has {base}"
    assert "sed -n 's/^ARG BASE_IMAGE=//p'" in (ROOT / "docker" / "build.sh").read_text()


def test_base_dependencies_have_no_torch() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in deps if d.lower().startswith("torch")]


def test_dockerignore_is_a_whitelist_without_venv_runs_or_data() -> None:
    lines = [x.strip() for x in (ROOT / ".dockerignore").read_text().splitlines()]
    assert lines[[i for i, x in enumerate(lines) if x and not x.startswith("#")][0]] == "*"
    assert {"!pyproject.toml", "!src/"} <= set(lines)
    assert not {"!.venv", "!runs", "!reports"} & set(lines)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_are_strict_and_parse(script: Path) -> None:
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_smoke_and_ci_clean_up_on_every_exit_path() -> None:
    for name in ("smoke.sh", "ci.sh", "build.sh"):
        assert "trap cleanup EXIT" in (ROOT / "docker" / name).read_text(), name
    smoke = (ROOT / "docker" / "smoke.sh").read_text()
    assert '--network host' in smoke and 'rm -f "$NAME"' in smoke


def test_compose_file_parses() -> None:
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    assert doc["services"]["diffres"]["build"]["dockerfile"] == "Dockerfile"
    assert doc["services"]["diffres-gpu"]["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    assert "pipca" in doc["secrets"]
    for name in ("diffres", "diffres-gpu"):  # HTTP and OIP gRPC published
        targets = {port.rsplit(":", 1)[1] for port in doc["services"][name]["ports"]}
        assert targets == {"8000", "8001"}, name


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint not installed")
@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(path: Path) -> None:
    subprocess.run(["hadolint", "--failure-threshold", "error", str(path)], check=True)


# ---- load test pieces (pure functions; the locustfile is only compiled: importing locust patches sockets)

def test_locustfile_compiles() -> None:
    py_compile.compile(str(ROOT / "tools" / "loadtest" / "locustfile.py"), doraise=True)


def test_summary_rates_and_percentiles_cover_the_steady_state_only() -> None:
    from tools.loadtest.stats import summarize

    records = [(0.0, 0.5, "short", True, 200, 2.0)]  # before the start: ramp-up, left out
    records += [(10.0 + i, 10.0 + i + 0.1 * (i + 1), "short", True, 200, 2.0) for i in range(10)]
    records += [(12.0, 14.0, "long", False, 503, 0.0)]
    s = summarize([(records, 10.0)], source="test")
    assert s["warmup_requests_excluded"] == 1
    assert s["total"]["requests"] == 11 and s["total"]["failures"] == 1
    assert s["window_s"] == pytest.approx(10.0)  # last answer at 19 + 1.0
    assert s["total"]["audio_s_per_s"] == pytest.approx(2.0)
    assert s["short"]["latency_ms"]["p50"] == pytest.approx(550.0)
    assert s["statuses"] == {"200": 10, "503": 1}
    two = summarize([(records, 10.0), ([(100.0, 101.0, "short", True, 200, 10.0)], 100.0)], source="test")
    assert two["window_s"] == pytest.approx(11.0) and two["total"]["requests"] == 12
    assert two["total"]["audio_s_per_s"] == pytest.approx(30.0 / 11.0, abs=0.01)


def test_mix_exact_places_long_clips_evenly() -> None:
    from tools.loadtest.clips import Clip, Mix

    clips = [Clip("s", "s", 1.0, "short"), Clip("l", "l", 20.0, "long")]
    mix = Mix(clips, 0.1, seed=0, exact=True)
    kinds = [mix.next().kind for _ in range(100)]
    assert kinds.count("long") == 10 and kinds[9] == "long"
    rand = Mix(clips, 0.1, seed=1)
    assert 50 < sum(rand.next().kind == "long" for _ in range(2000)) < 350


def test_generated_clip_set_without_data(tmp_path: Path) -> None:
    pytest.importorskip("soundfile")
    from tools.loadtest.clips import build, load

    clips = build(tmp_path, None, 8000, n_short=3, n_long=1, long_s=(10.0, 11.0), seed=0)
    source, again = load(tmp_path)
    assert source == "generated" and again == clips
    assert [c.kind for c in clips] == ["short"] * 3 + ["long"]
    assert all((tmp_path / c.file).stat().st_size > 0 for c in clips)
    assert 10.0 <= clips[-1].seconds <= 11.0
    assert json.loads((tmp_path / "manifest.json").read_text())["clips"][0]["name"] == "short-000.flac"


def test_loadtest_cli_bounds_users_and_time() -> None:
    from tools.loadtest.__main__ import parse_args

    assert parse_args([]).users == 16 and parse_args([]).run_time == 60
    for bad in (["-u", "0"], ["-u", "10000"], ["-t", "100000"]):
        with pytest.raises(SystemExit):
            parse_args(bad)
