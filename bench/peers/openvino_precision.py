"""OpenVINO GenAI's continuous-batching peer (../shared/peers/peer_openvino.py) at a stated
compute precision. On a CPU with bf16 units OpenVINO's CPU plugin computes in bf16 unless told
otherwise (and then insists on a bf16 KV cache), so an "fp32 model" is not fp32 arithmetic.

usage: python openvino_precision.py INPUT.jsonl OUTPUT.jsonl --precision f32|bf16 [peer args]
(run with the peer's venv; PEERS_SRC names the shared peers directory)"""

from __future__ import annotations

import os
import runpy
import sys

import openvino_genai as ov_genai

at = sys.argv.index("--precision")
hint = {"f32": "f32", "bf16": "bf16"}[sys.argv[at + 1]]
del sys.argv[at : at + 2]
Pipeline = ov_genai.ContinuousBatchingPipeline


def with_precision(model: str, scheduler: object, device: str, props: dict) -> object:  # type: ignore[type-arg]
    props = dict(props, INFERENCE_PRECISION_HINT=hint, KV_CACHE_PRECISION=hint)
    return Pipeline(model, scheduler, device, props)


ov_genai.ContinuousBatchingPipeline = with_precision
source = os.environ.get(
    "PEERS_SRC", os.path.join(os.path.dirname(__file__), "../../../shared/peers")
)
sys.argv[0] = os.path.join(source, "peer_openvino.py")
runpy.run_path(sys.argv[0], run_name="__main__")
