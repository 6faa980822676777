"""Regression tests of issue 10 against a real `diffres serve` on 127.0.0.1 (the suite's own scenarios, small).

Each scenario starts and always stops its own server (tools/reliability/probe.py); counts and durations
are a fraction of `make reliability`'s, the checks are the same.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import require_model
from tools.reliability import hostile, lifecycle
from tools.reliability.corpus import corpus
from tools.reliability.probe import Service

FAST = {**hostile.FAST_TIMEOUTS, "DIFFRES_HEADER_TIMEOUT_S": "1", "DIFFRES_BODY_TIMEOUT_S": "1",
        "DIFFRES_MAX_CONNECTIONS": "32", "DIFFRES_MAX_DURATION_S": "60"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Service:
    require_model("keywords")
    require_model("digits")
    with Service(tmp_path_factory.mktemp("rel"), "guarded", FAST) as s:
        yield s


def check(result: dict) -> None:
    assert result["passed"], result


def test_nested_json_is_a_400_in_the_oip_shape(service: Service) -> None:
    check(hostile.nested_json(service))


def test_streamed_flac_decodes_and_its_length_limit_holds_while_decoding(service: Service) -> None:
    check(hostile.flac_unknown_length(service, 60))


def test_oversized_headers_get_431(service: Service) -> None:
    check(hostile.header_size(service))


def test_slowloris_connections_are_closed_at_the_header_deadline(service: Service) -> None:
    check(hostile.slowloris(service, 16, 1))


def test_stalled_bodies_get_408_and_connections_over_the_cap_503(service: Service) -> None:
    result = hostile.half_open(service, 48, 1)
    check(result)
    assert set(result["outcomes"]) == {"408", "503"}  # 32 held to the body deadline, the rest refused at once


def test_bad_input_corpus_gets_json_4xx_and_the_server_stays_up(service: Service) -> None:
    check(corpus(service))


def test_declared_oversized_v2_body_is_refused_before_it_is_sent(service: Service) -> None:
    status, seconds = hostile.declared_only(service, "/v2/models/keywords/infer", 10**9,
                                            "Content-Type: application/json\r\n")
    assert status == "413" and seconds < 2


def test_clients_that_hang_up_cancel_their_work_and_are_logged_499(tmp_path: Path) -> None:
    require_model("keywords")
    with Service(tmp_path, "storm", {"DIFFRES_LOG_LEVEL": "INFO"}) as s:
        check(hostile.disconnect_storm(s, 4, 5))
        metrics = httpx.get(s.url + "/metrics", timeout=5).text
    assert 'status="499"' in metrics


def test_requests_cut_by_the_shutdown_grace_get_json_503(tmp_path: Path) -> None:
    require_model("keywords")
    check(lifecycle.sigterm_in_flight(tmp_path, clients=2, slow=2, grace_s=2))


def test_a_corrupt_model_makes_readiness_degraded_without_paths(tmp_path: Path) -> None:
    require_model("keywords")
    require_model("digits")
    check(lifecycle.corrupt_model(tmp_path))
