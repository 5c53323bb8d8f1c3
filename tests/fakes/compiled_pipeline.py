"""A tiny real KFP pipeline, compiled with kfp's own compiler, standing in for the compiled
assess-and-improve package in tests that submit runs to the fake KFP API. (No ``from __future__
import annotations`` here: kfp reads the component's annotations as types.)"""
from kfp import compiler, dsl


@dsl.component(base_image="python:3.11")
def noop(cycle_id: str) -> str:
    return cycle_id


@dsl.pipeline(name="assess-and-improve")
def pipeline(cycle_id: str = "x"):
    noop(cycle_id=cycle_id)


def compile_to(path) -> str:
    compiler.Compiler().compile(pipeline, str(path))
    return str(path)
