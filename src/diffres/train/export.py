"""diffres export --checkpoint runs/keywords/best.pt --out models/keywords.onnx [--quantize int8]

Exports, runs onnx.checker, then verifies parity with PyTorch at lengths not used at export
(0.2 s to 10 min, batch 1 and 4). Exits non-zero when any check fails. Writes NAME.export.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from diffres.train.requires import onnx  # the `train` extra, or an error naming it
from onnxruntime.quantization import QuantType, quantize_dynamic

from diffres.train.checkpoint import load_checkpoint

from .onnx_export import export_onnx, model_metadata
from .parity import TOLERANCE, check_mixed_batch, check_parity, onnx_accuracy


def quantize_int8(fp32_path: Path, out_path: Path) -> None:
    """Dynamic int8 weights for the backbone's convolutions and head (ConvInteger / MatMulInteger).

    The DFT conv, the mel matmul and the importance estimator stay float: 8-bit activations
    cannot hold a power spectrum's range (all-int8 cost 22 points on keywords). The exporter's
    value_info annotations trip the quantizer's strict shape inference; they are only hints,
    so they are dropped first.
    """
    proto = onnx.load(str(fp32_path))
    proto.graph.ClearField("value_info")
    backbone = [n.name for n in proto.graph.node
                if n.op_type in ("Conv", "MatMul", "Gemm") and any(i.startswith("backbone.") for i in n.input)]
    plain = fp32_path.with_name(fp32_path.stem + ".plain.onnx")
    onnx.save_model(proto, str(plain))
    quantize_dynamic(str(plain), str(out_path), weight_type=QuantType.QInt8, nodes_to_quantize=backbone)


def main(argv: list[str] | None = None) -> int:
    """`python -m diffres.train.export ...`, the same as `diffres export ...`."""
    from diffres.train.options import export_parser

    return export(export_parser().parse_args(argv))


def export(a: argparse.Namespace) -> int:
    """Export, check parity, write NAME.export.json; 1 when a check fails."""
    model, ckpt = load_checkpoint(a.checkpoint)
    out = Path(a.out)
    meta = model_metadata(model, ckpt)
    report: dict = {"checkpoint": a.checkpoint, "metadata": meta}
    metrics = Path(a.checkpoint).with_name("metrics.json")  # written by diffres train beside best.pt
    if metrics.exists():
        report["training"] = {k: v for k, v in json.loads(metrics.read_text()).items() if k != "history"}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = out if not a.quantize else Path(tmp) / "fp32.onnx"
        export_onnx(model, fp32, meta)
        print(f"exported {fp32 if not a.quantize else 'fp32 graph'}: onnx.checker passed, opset 18")
        ok = True
        if not a.skip_parity:
            rows = check_parity(model, str(fp32)) + check_mixed_batch(model, str(fp32))
            print(f"{'kind':>5} {'seconds':>8} {'batch':>5} {'max|dlogit|':>12} {'frames_in':>9} {'frames_out':>10} "
                  f"{'expected':>8}")
            for r in rows:
                print(f"{r.kind:>5} {r.seconds:8.2f} {r.batch:5d} {r.max_logit_diff:12.2e} {r.frames_in:9d} "
                      f"{r.frames_out:10d} {r.expected_frames_out:8d} {'ok' if r.ok else 'FAIL'}")
            ok = all(r.ok for r in rows)
            print(f"parity (full: ONNX vs PyTorch; mixed: each row of a padded batch vs itself alone; "
                  f"max |logit difference| <= {TOLERANCE:g}, frames_out = T - floor(delta*T)): "
                  f"{'passed' if ok else 'FAILED'}")
            report["parity"] = [asdict(r) for r in rows]
        if a.quantize:
            quantize_int8(fp32, out)
            sr, labels = model.cfg.frontend.sample_rate, ckpt["labels"]
            paths = ckpt["val_clips"]
            truth = [labels.index(Path(pth).parent.name) for pth in paths]
            acc32 = onnx_accuracy(str(fp32), paths, truth, sr)
            acc8 = onnx_accuracy(str(out), paths, truth, sr)
            print(f"int8: val accuracy {acc8:.4f} vs fp32 {acc32:.4f} (change {acc8 - acc32:+.4f}) "
                  f"on {len(paths)} clips")
            report["int8"] = {"val_accuracy_fp32": acc32, "val_accuracy_int8": acc8, "n_val": len(paths)}
    report["size_bytes"] = out.stat().st_size
    report["parity_passed"] = ok
    out.with_suffix(".export.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) and {out.with_suffix('.export.json')}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
