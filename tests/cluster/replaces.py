"""Derive tests/cluster/k8sbin/go.mod's replace block from kubernetes' own go.mod.

k8s.io/kubernetes requires its staging modules at ``v0.0.0`` and replaces them with folders of its
own tree (``k8s.io/api => ./staging/src/k8s.io/api``); a module that requires kubernetes must
replace each with its published release, ``v0.MINOR.PATCH`` for kubernetes ``v1.MINOR.PATCH``.

    python tests/cluster/replaces.py            # print the block for the version go.mod requires
    python tests/cluster/replaces.py --check    # exit 1 when go.mod's block differs

The committed go.mod stays the source of truth; this only shows how its block was made.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
GOMOD = HERE / "k8sbin" / "go.mod"


def staging_modules(kubernetes_gomod: str) -> list[str]:
    """Modules kubernetes' go.mod replaces with a folder of its own tree."""
    return sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", kubernetes_gomod, re.M)))


def replace_block(modules: list[str], version: str) -> str:
    published = "v0." + version.removeprefix("v1.")
    lines = [f"\t{m} => {m} {published}" for m in modules]
    return "replace (\n" + "\n".join(lines) + "\n)"


def committed_block(text: str) -> str:
    match = re.search(r"^replace \($.*?^\)", text, re.M | re.S)
    return match.group(0) if match else ""


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(HERE.parent))
    from cluster.binaries import KUBERNETES_VERSION

    with tempfile.TemporaryDirectory() as outside:
        out = subprocess.run(["go", "mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"],
                             cwd=outside, capture_output=True, text=True, check=True, timeout=300).stdout
    upstream = Path(json.loads(out)["GoMod"]).read_text()
    block = replace_block(staging_modules(upstream), KUBERNETES_VERSION)
    if "--check" in argv:
        same = committed_block(GOMOD.read_text()) == block
        print("go.mod's replace block matches kubernetes'" if same else f"differs; expected:\n{block}")
        return 0 if same else 1
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
