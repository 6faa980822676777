"""Concurrent requests: all answered correctly, batched together, and the event loop never blocks."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from diffres.pipeline import softmax
from tests.conftest import encode, metric_value, require_model, serve, tone, wav

pytestmark = pytest.mark.anyio
N_REQUESTS = 32


async def test_many_simultaneous_requests_are_batched_and_correct() -> None:
    require_model("keywords")
    # A long wait makes grouping deterministic: a batch leaves when 8 same-shape inputs are queued.
    async with serve(batch_size=8, batch_wait_ms=1000, queue_limit=64) as s:
        model = s.app.state.registry.get("keywords")
        signals = [tone(1.0, 16000, freq=f) for f in (220, 440, 880, 1760)]
        expected = [softmax(model.model.run([x])[0].logits) for x in signals]  # one at a time, direct
        before = (await s.client.get("/metrics")).text

        async def post(i: int) -> dict:
            r = await s.client.post(f"/v1/classify?top_k={len(model.info.labels)}", content=encode(signals[i % 4], 16000, subtype="FLOAT"),
                                    headers={"content-type": "audio/wav", "X-Request-ID": f"req-{i}"})
            assert r.status_code == 200, r.text
            assert r.headers["x-request-id"] == f"req-{i}"
            return r.json()

        bodies = await asyncio.wait_for(asyncio.gather(*(post(i) for i in range(N_REQUESTS))), 120)
        after = (await s.client.get("/metrics")).text

    for i, body in enumerate(bodies):  # each caller got the answer for its own input
        labels = list(model.info.labels)
        got = np.zeros(len(labels))
        for p in body["predictions"]:
            got[labels.index(p["label"])] = p["score"]
        np.testing.assert_allclose(got, expected[i % 4], atol=1e-4)

    def delta(name: str) -> float:
        return metric_value(after, name, model="keywords") - metric_value(before, name, model="keywords")

    assert delta("diffres_batch_size_sum") == N_REQUESTS  # every input went through the batcher
    batches = delta("diffres_batch_size_count")
    singles = metric_value(after, "diffres_batch_size_bucket", model="keywords", le="1.0") - \
        metric_value(before, "diffres_batch_size_bucket", model="keywords", le="1.0")
    assert batches < N_REQUESTS and singles < batches, f"{batches} batches, {singles} of size 1"


async def test_windows_of_a_long_request_share_batches_and_the_loop_stays_free() -> None:
    require_model("keywords")
    async with serve(batch_size=8, batch_wait_ms=2) as s:
        model = s.app.state.registry.get("keywords")
        before = (await s.client.get("/metrics")).text
        long_request = asyncio.create_task(
            s.client.post("/v1/classify", content=wav(60.0), headers={"content-type": "audio/wav"}))
        while model.batcher.reserved == 0:  # the long request holds its lease while it runs
            assert not long_request.done(), long_request.result().text
            await asyncio.sleep(0.002)
        health = await asyncio.wait_for(s.client.get("/healthz"), 5)
        assert health.status_code == 200 and not long_request.done()  # answered while inference was running
        r = await asyncio.wait_for(long_request, 120)
        after = (await s.client.get("/metrics")).text
    windowing = r.json()["windowing"]  # windows of window_s every hop_s over 60 s, the last one at the end
    windows = math.ceil((60.0 - windowing["window_s"]) / windowing["hop_s"] - 1e-9) + 1
    assert r.status_code == 200 and windowing["windows"] == windows
    sizes = metric_value(after, "diffres_batch_size_sum", model="keywords") - \
        metric_value(before, "diffres_batch_size_sum", model="keywords")
    count = metric_value(after, "diffres_batch_size_count", model="keywords") - \
        metric_value(before, "diffres_batch_size_count", model="keywords")
    assert sizes == windows and count <= windows / 4  # windows travel in batches, not one by one
