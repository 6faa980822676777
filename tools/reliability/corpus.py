"""The bad-input corpus against a real server: each case must get a JSON 4xx, and the server must stay healthy."""

from __future__ import annotations

import json
import struct
from typing import Any

import httpx
import numpy as np

from tools.reliability import audio
from tools.reliability.hostile import declared_only, healthy, is_json_error
from tools.reliability.probe import Service

WAV = {"content-type": "audio/wav"}
JSON = {"content-type": "application/json"}
V2 = "/v2/models/keywords/infer"


def _wav(x: np.ndarray, subtype: str = "PCM_16", sr: int = audio.SR) -> bytes:
    return audio.encode(x, sr, "WAV", subtype)


def _claims_hours() -> bytes:
    data = bytearray(_wav(audio.tone(0.1)))
    data[4:8], data[40:44] = struct.pack("<I", 0xFFFFFFF0), struct.pack("<I", 0xFFFFFF00)
    return bytes(data)


def _float_wav(value: float) -> bytes:
    x = audio.tone(0.5)
    x[100] = value
    return _wav(x, "FLOAT")


def _tensor(data: Any, shape: list[int], datatype: str = "FP32") -> bytes:
    return json.dumps({"inputs": [{"name": "waveform", "shape": shape, "datatype": datatype, "data": data}]}).encode()


def cases() -> list[tuple[str, str, str, bytes, dict[str, str]]]:
    """(name, method, path, body, headers); all must be refused with a JSON 4xx."""
    flac = audio.encode(audio.tone(2.0))
    rng = np.random.default_rng(0)
    return [
        ("empty body", "POST", "/v1/classify", b"", WAV),
        ("text/plain", "POST", "/v1/classify", b"hello", {"content-type": "text/plain"}),
        ("random bytes as audio", "POST", "/v1/classify", rng.bytes(20000), WAV),
        ("truncated FLAC", "POST", "/v1/classify", flac[:len(flac) // 3], {"content-type": "audio/flac"}),
        ("FLAC header only", "POST", "/v1/classify", flac[:42], {"content-type": "audio/flac"}),
        ("WAV header claims 37 hours", "POST", "/v1/classify", _claims_hours(), WAV),
        ("NaN sample", "POST", "/v1/classify", _float_wav(float("nan")), WAV),
        ("Inf sample", "POST", "/v1/classify", _float_wav(float("inf")), WAV),
        ("sample of 1e30", "POST", "/v1/classify", _float_wav(1e30), WAV),
        ("1 ms of audio", "POST", "/v1/classify", _wav(audio.tone(0.001)), WAV),
        ("unknown model", "POST", "/v1/classify?model=nope", _wav(audio.tone(1.0)), WAV),
        ("top_k=0", "POST", "/v1/classify?top_k=0", _wav(audio.tone(1.0)), WAV),
        ("top_k not a number", "POST", "/v1/classify?top_k=abc", _wav(audio.tone(1.0)), WAV),
        ("multipart without file", "POST", "/v1/classify", b"--b\r\nContent-Disposition: form-data; name=x\r\n\r\n1"
         b"\r\n--b--\r\n", {"content-type": "multipart/form-data; boundary=b"}),
        ("broken multipart", "POST", "/v1/classify", b"--b\r\ngarbage", {"content-type": "multipart/form-data; boundary=b"}),
        ("raw body to batch", "POST", "/v1/classify/batch", _wav(audio.tone(1.0)), WAV),
        ("declared 1 TB", "POST", "/v1/classify", b"", {**WAV, "content-length": str(10**12)}),
        ("v2 not JSON", "POST", V2, b"{not json", JSON),
        ("v2 strings as data", "POST", V2, _tensor(["a", "b"], [1, 2]), JSON),
        ("v2 shape mismatch", "POST", V2, _tensor([0.0] * 3, [2, 3]), JSON),
        ("v2 INT16", "POST", V2, _tensor([1, 2, 3], [1, 3], "INT16"), JSON),
        ("v2 NaN", "POST", V2, b'{"inputs":[{"name":"waveform","shape":[1,2],"datatype":"FP32","data":[NaN,0]}]}', JSON),
        ("v2 negative shape", "POST", V2, _tensor([0.0], [-1, 1]), JSON),
        ("v2 huge shape", "POST", V2, _tensor([0.0], [1, 10**12]), JSON),
        ("v2 nesting bomb", "POST", V2, b"[" * 5000 + b"]" * 5000, JSON),
        ("v2 binary size lies", "POST", V2, b'{"inputs":[{"name":"waveform","shape":[1,4],"datatype":"FP32",'
         b'"parameters":{"binary_data_size":99}}]}' + b"\0" * 16, {"inference-header-content-length": "84"}),
        ("v2 multipart", "POST", V2, b"--b--\r\n", {"content-type": "multipart/form-data; boundary=b"}),
        ("unknown route", "GET", "/nope", b"", {}),
        ("wrong method", "DELETE", "/v1/classify", b"", {}),
    ]


def corpus(s: Service) -> dict[str, Any]:
    """Every case once; a case fails when it is not a JSON 4xx or the server is not healthy after it."""
    bad: list[str] = []
    statuses: dict[str, int] = {}
    with httpx.Client(base_url=s.url, timeout=60) as client:
        for name, method, path, body, headers in cases():
            if "content-length" in headers:  # a size no client library will declare without sending it
                status, _ = declared_only(s, path, int(headers["content-length"]), "Content-Type: audio/wav\r\n")
                statuses[name] = int(status) if status.isdigit() else 0
                if status != "413":
                    bad.append(f"{name}: {status}")
                continue
            try:
                r = client.request(method, path, content=body, headers=headers)
            except httpx.HTTPError as exc:
                bad.append(f"{name}: {type(exc).__name__}")
                continue
            statuses[name] = r.status_code
            if not (400 <= r.status_code < 500 and is_json_error(r)) or not healthy(s):
                bad.append(f"{name}: {r.status_code} {r.text[:120]}")
    return {"passed": not bad and healthy(s), "cases": len(cases()), "problems": bad, "statuses": statuses}
