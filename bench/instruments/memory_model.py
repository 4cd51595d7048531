"""An analytic model of the memory a train step holds at its peak, from the layer arithmetic.

`train_memory_estimate` is what ``alexnet-bench gpu-check``'s ``memory`` item compares the
seed's measured CUDA peak with (docs/bench.md, "The memory estimate"). It builds the model on
the CPU and runs one probe forward; it needs no GPU.
"""

from __future__ import annotations

__all__ = ["train_memory_estimate"]


def train_memory_estimate(*, batch_size: int = 128, resolution: tuple[int, int] = (224, 224), momentum: float = 0.0,
                          mask_bytes: int = 1, probe_batch: int = 1) -> dict[str, int]:
    """Bytes a fp32 train step of the d2l net holds at its peak, from the layer arithmetic.

    estimate = weights + gradients + optimizer state + saved activations + the batch, where

    - weights: every parameter, fp32; gradients: the same again (all exist at the end of
      backward; ``zero_grad(set_to_none=True)`` frees them before the next forward);
    - optimizer state: SGD keeps a momentum buffer per parameter only when momentum > 0 (the
      seed's plain SGD: none);
    - saved activations: what autograd keeps for backward, per layer (autograd's formulas in
      tools/autograd/derivatives.yaml): a conv or linear layer saves its input, a ReLU its
      output, a max pool its input and int64 indices of its output's size, a dropout its mask
      (``mask_bytes`` per element: bool in CUDA's fused ``native_dropout``; the CPU's composite
      dropout saves an fp32 mask, 4), the loss its log-softmax; a tensor saved twice (a ReLU's
      output is also the next pool's input) counts once, a flatten is a view. conv1's input is
      the batch, counted below;
    - the batch: the fp32 images and int64 labels.

    Layer outputs come from forward hooks at ``probe_batch`` images on the CPU, scaled to
    ``batch_size`` (every activation is linear in the batch). What it leaves out: cuDNN/cuBLAS
    workspaces, the gradient buffers of activations that live briefly during backward, and the
    allocator's rounding; hence the +-30% tolerance of the check.
    """
    import torch
    from torch import nn

    from alexnet.model import build_model, summary_layers

    model = build_model("d2l", resolution=resolution)
    model.train()
    x = torch.zeros(probe_batch, 1, *resolution)
    # Storage address -> the tensor, kept alive so that no later tensor can reuse its address;
    # one entry per storage, so aliases and views (flatten) count once.
    saved: dict[int, torch.Tensor] = {}
    extra = 0  # saved tensors that are new, not layer outputs (pool indices, dropout masks)

    def keep(t: torch.Tensor) -> None:
        if t.untyped_storage().data_ptr() != x.untyped_storage().data_ptr():
            saved[t.untyped_storage().data_ptr()] = t

    t = x
    with torch.no_grad():
        for layer in summary_layers(model):
            out = layer(t)
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                keep(t)
            elif isinstance(layer, nn.ReLU):
                keep(out)
            elif isinstance(layer, nn.MaxPool2d):
                keep(t)
                extra += out.numel() * 8  # int64 indices
            elif isinstance(layer, nn.Dropout):
                extra += out.numel() * mask_bytes
            elif not isinstance(layer, nn.Flatten):
                raise ValueError(f"no saved-tensor rule for {type(layer).__name__}")
            t = out
    extra += t.numel() * 4  # log_softmax's output (fp32), saved by its backward and nll_loss's
    activations_per_image = (sum(v.numel() * v.element_size() for v in saved.values()) + extra) / probe_batch
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    c, h, w = 1, *resolution
    parts = {
        "weights": weights,
        "gradients": weights,
        "optimizer_state": weights if momentum > 0 else 0,
        "activations": int(round(activations_per_image * batch_size)),
        "batch": batch_size * c * h * w * 4 + batch_size * 8,
    }
    parts["total"] = sum(parts.values())
    return parts
