"""Compile the pipelines to YAML: ``python -m daic.pipelines.compile`` (``make compile-pipelines``).

The compiled YAML is checked in (``compiled/``): a Kubeflow user uploads it as is, the operator
submits it, and a test fails when it no longer matches the Python definition.
"""
from __future__ import annotations

import argparse
from pathlib import Path

COMPILED = Path(__file__).resolve().parent / "compiled"
TARGETS = {"assess_and_improve.yaml": "daic.pipelines.assess_and_improve:assess_and_improve"}


def compile_pipeline(output: Path, ref: str = TARGETS["assess_and_improve.yaml"]) -> Path:
    import importlib

    from kfp import compiler

    module, name = ref.split(":")
    pipeline = getattr(importlib.import_module(module), name)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline_func=pipeline, package_path=str(output))
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=COMPILED, help="where to write the YAML files")
    args = parser.parse_args(argv)
    for filename, ref in TARGETS.items():
        print(compile_pipeline(args.out_dir / filename, ref))


if __name__ == "__main__":
    main()
