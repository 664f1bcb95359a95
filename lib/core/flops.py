"""Floating-point operations of a network's forward pass, counted the same way on every torch version.

:func:`count_flops` runs one forward under :class:`torch.utils.flop_counter.FlopCounterMode` and
reports FLOPs = 2 × multiply-adds, grouped by kind:

``convolution``
    ``aten.convolution``: 2 · |output| · C_in · k_h · k_w / groups.
``matmul``
    ``aten.mm`` / ``aten.addmm``, i.e. linear layers: 2 · rows · C_in · C_out.
``attention``
    the fused scaled-dot-product-attention kernels, counted by :func:`attention_flops` (the two
    products Q Kᵀ and softmax(·) V), whatever kernel torch picks.
``batched_matmul``
    ``aten.bmm`` / ``aten.baddbmm``: attention's two products when attention runs unfused (the
    math kernel, or diffusers' ``AttnProcessor``), and any other batched matmul.
``other``
    any other op torch counts; ``total`` is the sum of all of them.

Why the attention formula is ours: which kernel ``F.scaled_dot_product_attention`` dispatches to,
and whether torch's counter knows a formula for it, depend on the torch version and the device.
With torch 2.14.1 on a CPU it runs ``aten._scaled_dot_product_flash_attention_for_cpu``, which
``FlopCounterMode`` has no formula for (and cannot decompose), so torch alone counts attention's
N×N products as zero; a torch whose attention runs the math kernel counts them as ``bmm``. Giving
every fused kernel the same formula makes ``total`` the same in both cases (elementwise ops —
softmax, norms, activations — are not counted by either).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["attention_flops", "count_flops", "FLOP_KINDS"]

FLOP_KINDS = ("convolution", "matmul", "attention", "batched_matmul", "other")

# fused attention kernels (those this torch has); each takes query, key, value (B, heads, N, d) first
_ATTENTION_KERNELS = (
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable",
    "_scaled_dot_product_attention_math_for_mps",
)
_KIND_OF_OP = {"convolution": "convolution", "_convolution": "convolution", "mm": "matmul",
               "addmm": "matmul", "bmm": "batched_matmul", "baddbmm": "batched_matmul"}


def attention_flops(query_shape: torch.Size | tuple[int, ...], key_shape: torch.Size | tuple[int, ...],
                    value_shape: torch.Size | tuple[int, ...]) -> int:
    """FLOPs of softmax(Q Kᵀ / √d) V: 2·B·h·N_q·N_k·d (Q Kᵀ) + 2·B·h·N_q·N_k·d_v (· V), shapes (B, h, N, d).

    ``h`` is the query's head count (grouped-query attention broadcasts K and V); the scaling and
    the softmax are elementwise and not counted, as everywhere in :func:`count_flops`.
    """
    *batch_q, n_q, d = query_shape
    n_k, d_v = key_shape[-2], value_shape[-1]
    if key_shape[-1] != d or value_shape[-2] != n_k:
        raise ValueError(f"attention shapes do not fit: query {tuple(query_shape)}, key {tuple(key_shape)}, "
                         f"value {tuple(value_shape)} (need query (…, N_q, d), key (…, N_k, d), value (…, N_k, d_v))")
    rows = 1
    for b in batch_q:
        rows *= int(b)
    return 2 * rows * int(n_q) * int(n_k) * (int(d) + int(d_v))


def _attention_kernel_flops(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    return attention_flops(query.shape, key.shape, value.shape)


_attention_kernel_flops._get_raw = True  # FlopCounterMode passes the tensors themselves, not their shapes


def _attention_mapping() -> dict[Any, Any]:
    mapping = {}
    for name in _ATTENTION_KERNELS:
        try:
            op = getattr(torch.ops.aten, name)
        except (AttributeError, RuntimeError):  # not in this torch
            continue
        mapping[op] = _attention_kernel_flops
    return mapping


def count_flops(model: torch.nn.Module, *inputs: Any, **kwargs: Any) -> dict[str, int]:
    """FLOPs (2 × multiply-adds) of one forward ``model(*inputs, **kwargs)`` without gradients, by kind and ``total``.

    The kinds are :data:`FLOP_KINDS` (see the module docstring: convolutions, linear layers,
    attention by :func:`attention_flops`, batched matmuls, other counted ops); elementwise ops are
    not counted. The inputs must already be on the model's device.
    """
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_attention_mapping()) as counter:
        model(*inputs, **kwargs)
    attention_ops = {str(op) for op in _attention_mapping()}
    counts = dict.fromkeys(FLOP_KINDS, 0)
    for op, n in counter.get_flop_counts().get("Global", {}).items():
        name = str(op)
        kind = "attention" if name in attention_ops else _KIND_OF_OP.get(name.removeprefix("aten."), "other")
        counts[kind] += int(n)
    counts["total"] = sum(counts[k] for k in FLOP_KINDS)
    return counts
