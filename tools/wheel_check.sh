#!/usr/bin/env bash
# The wheel as a user gets it: build it, check that its only top-level import is `diffres` and that the
# shipped models travel in it, install it (no extras) into a fresh virtual environment, and classify the
# sample recording from outside the checkout, so nothing but the installed wheel can be imported.
# Needs `build` (the test extra) in .venv; pip fetches the wheel's dependencies from the package index.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$repo/.venv/bin/python" -m build --wheel --outdir "$work/dist" "$repo" >"$work/build.log" 2>&1 \
  || { cat "$work/build.log"; exit 1; }
wheel=$(ls "$work"/dist/*.whl)
echo "built $(basename "$wheel")"

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q --upgrade pip
"$work/venv/bin/pip" install -q "$wheel"
cd "$work"
data_files=$(cd "$repo/src" && git ls-files diffres | grep -v -e '\.py$' -e '\.export\.json$' || true)  # export reports stay in the repository
"$work/venv/bin/python" - "$wheel" $data_files <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
missing = sorted(set(sys.argv[2:]) - set(names))
assert not missing, f"package files missing from the wheel (pyproject package-data): {missing}"
top = sorted({n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")})
assert top == ["diffres"], f"top-level entries besides diffres: {top}"
models = sorted(n for n in names if n.startswith("diffres/models/") and n.endswith(".onnx"))
assert models, "no shipped models in the wheel"
import diffres
assert "site-packages" in diffres.__file__, diffres.__file__
print(f"wheel: one top-level import (diffres), models {', '.join(m.rsplit('/', 1)[1] for m in models)}, "
      f"all {len(sys.argv) - 2} package data files")
import diffres.server.app  # the service's routes, OpenAPI examples and demo page load from the wheel
PY
"$work/venv/bin/diffres" classify --json "$repo/examples/long.flac" >"$work/long.json"
"$work/venv/bin/python" - "$work/long.json" <<'PY'
import json, sys
result = json.loads(open(sys.argv[1]).read())
labels = [e["label"] for e in result["events"]]
assert result["model"] == "keywords" and len(labels) >= 3, result
print(f"installed wheel classified examples/long.flac: {len(labels)} events ({', '.join(labels)})")
PY
for command in "" serve classify models train calibrate export; do
  "$work/venv/bin/diffres" $command --help >/dev/null
done
echo "every diffres --help exits 0 in the serving install"
