#!/usr/bin/env bash
# Create, or reuse, the virtual environment for this checkout and print its path.
#
# The environment lives outside the checkout, keyed by a hash of the dependencies in
# pyproject.toml, so a fresh clone (CI) reuses it while the requirements are unchanged:
# torch with torchvision is about 6 GB and 3 minutes to install. FVIS_VENV overrides
# the location. fvis itself is (re)installed in editable mode on every call (seconds).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
key=$("$py" - "$root/pyproject.toml" <<'PY'
import hashlib, json, sys, tomllib
p = tomllib.load(open(sys.argv[1], "rb"))["project"]
deps = [p["dependencies"], p.get("optional-dependencies", {}), sys.version_info[:2]]
print(hashlib.sha256(json.dumps(deps, sort_keys=True).encode()).hexdigest()[:12])
PY
)
venv=${FVIS_VENV:-$HOME/.cache/fvis/venv-$key}
if [ ! -f "$venv/.fvis-complete" ]; then
  echo "fvis: creating the virtual environment $venv (torch + torchvision: ~6 GB, a few minutes)" >&2
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip setuptools wheel >&2
  "$venv/bin/python" - "$root/pyproject.toml" > "$venv/requirements.txt" <<'PY'
import sys, tomllib
p = tomllib.load(open(sys.argv[1], "rb"))["project"]
extras = p.get("optional-dependencies", {})
reqs, todo, seen = list(p["dependencies"]), ["data", "dev"], set()
while todo:  # expand self-references such as "fvis[data,ray]"
    k = todo.pop()
    if k in seen:
        continue
    seen.add(k)
    for r in extras.get(k, []):
        if r.startswith("fvis["):
            todo += r[5:-1].split(",")
        else:
            reqs.append(r)
print("\n".join(dict.fromkeys(reqs)))
PY
  # torch and torchvision together from the registry, so their builds match.
  "$venv/bin/python" -m pip install -q -r "$venv/requirements.txt" >&2
  touch "$venv/.fvis-complete"
fi
"$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$root" >&2
echo "$venv"
