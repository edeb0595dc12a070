"""Linear layers through oneDNN with weights packed once, on the CPU.

torch's CPU linear is MKL's sgemm, which lays the weight out anew for every call; at decode
batch sizes (tens of rows) that costs as much as the product itself. oneDNN, given the weight
packed once for the machine's kernels, runs those products up to about 1.5x faster. The results
differ from MKL's in the last bits of float32 (another summation order), as any two GEMM
libraries do; within one process every row still gets the same arithmetic in any batch.
"""

from __future__ import annotations

import torch

PACKED_FOR_ROWS = 64
"""The row count oneDNN packs the weight for (any count runs on it)."""


class PackedLinear(torch.nn.Module):
    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        with torch.no_grad():
            self.packed = torch.ops.mkldnn._reorder_linear_weight(
                linear.weight.detach(), PACKED_FOR_ROWS
            )
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def available() -> bool:
    return bool(
        torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


def pack(model: torch.nn.Module) -> int:
    """Swap every CPU float32/bfloat16 ``nn.Linear`` of ``model`` for a packed one whose
    output matches it (checked on a probe); returns how many were swapped."""
    if not available():
        return 0
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear or child.weight.device.type != "cpu":
                continue
            if child.weight.dtype not in (torch.float32, torch.bfloat16):
                continue
            packed = PackedLinear(child)
            probe = torch.randn(3, child.in_features, dtype=child.weight.dtype)
            with torch.inference_mode():
                if not torch.allclose(packed(probe), child(probe), rtol=1e-2, atol=1e-3):
                    continue
            setattr(parent, name, packed)
            swapped += 1
    return swapped
