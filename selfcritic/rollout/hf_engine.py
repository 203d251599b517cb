"""A transformers `generate` engine behind the RolloutEngine protocol.

For machines without vLLM and as the benchmarks' peer. Samples come from `generate` with
do_sample (greedy at temperature 0), top_k off, top_p as asked; the logprob of each sampled token
is read from the processed scores (after temperature and top-p), so it is the logprob of the
distribution actually sampled, as the vLLM engine reports. Prompts are left-padded into one batch
per call. Sleep is real on any device: `sleep(1)` keeps a host copy of the weights and buffers
and moves the model to the meta device (its device memory freed), `sleep(2)` keeps nothing;
`wake_up` re-materialises the model from the host copy (level 1) or the checkpoint (level 2),
then applies any weights synced while asleep. Left out: continuous batching and a KV-cache budget
(vLLM's job; there is no KV cache between calls, so the `kv_cache` tag frees nothing).
"""

from __future__ import annotations

from pathlib import Path

import torch

from selfcritic.config import RolloutConfig
from selfcritic.rollout.types import Sample, SamplingSpec, request_seed
from selfcritic.rollout.weights import to_transformers_names


class TransformersEngine:
    def __init__(
        self, model_path: Path, cfg: RolloutConfig, trust_remote_code: bool = False
    ) -> None:
        from selfcritic.model.build import load_model, load_tokenizer

        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
            cfg.dtype
        ]
        model = load_model(model_path, dtype, trust_remote_code).eval()
        self._bind(model, load_tokenizer(model_path, trust_remote_code))
        self.model_path, self.dtype, self.trust_remote_code = model_path, dtype, trust_remote_code

    @classmethod
    def around(cls, model, tokenizer) -> TransformersEngine:
        """An engine over a model someone else holds (e.g. the model a TRL trainer trains):
        it generates with the model as it is; the caller keeps it in eval mode and no-grad."""
        engine = cls.__new__(cls)
        engine._bind(model, tokenizer)
        return engine

    def _bind(self, model, tokenizer) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.weight_version = 0
        self.model_path = None  # an engine `around` a model cannot reload it (sleep level 1 only)
        self.asleep = 0  # the level slept at; 0: awake
        self.device = next(model.parameters()).device
        # asleep: level 1's host copy of every weight and buffer, with the updates synced since
        # (transformers names); level 2: only the updates synced since
        self._host: dict[str, torch.Tensor] = {}

    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[list[Sample]]:
        if spec.seed is not None:  # one generator for the batched call: seeded by its first
            # prompt's seed (transformers' generate has no per-request generators)
            torch.manual_seed(request_seed(spec.seed, spec.request_index(0)))
        rows = [list(p) for p in prompts for _ in range(spec.n)]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, row in enumerate(rows):
            ids[r, width - len(row) :] = torch.tensor(row)
            mask[r, width - len(row) :] = 1
        with torch.no_grad():
            out = self.model.generate(**self._generate_kwargs(ids, mask, spec))
        new_tokens = out.sequences[:, width:]
        logprobs = torch.stack([torch.log_softmax(s.float(), -1) for s in out.scores], dim=1)
        chosen = logprobs.gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)  # [rows, new]
        samples = [
            self._sample(rows[r], new_tokens[r], chosen[r], logprobs[r], spec)
            for r in range(len(rows))
        ]
        return [samples[i * spec.n : (i + 1) * spec.n] for i in range(len(prompts))]

    def _generate_kwargs(self, ids, mask, spec: SamplingSpec) -> dict:
        kwargs = dict(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=spec.max_tokens,
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=self.pad_id,
            eos_token_id=None if spec.ignore_eos else self._enders(spec),
        )
        if spec.ignore_eos:
            kwargs["min_new_tokens"] = spec.max_tokens
        if spec.temperature > 0:
            kwargs.update(do_sample=True, temperature=spec.temperature, top_k=0, top_p=spec.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_k=None, top_p=None)
        if spec.stop:
            kwargs.update(stop_strings=list(spec.stop), tokenizer=self.tokenizer)
        if spec.allowed_token_ids:
            allowed = list(spec.allowed_token_ids)
            kwargs["prefix_allowed_tokens_fn"] = lambda batch_id, ids: allowed
        return kwargs

    def _enders(self, spec: SamplingSpec) -> list[int]:
        """The ids that end a sample: EOS and the spec's stop token ids."""
        return list(dict.fromkeys([self.eos_id, *spec.stop_token_ids]))

    def _sample(
        self,
        prompt,
        tokens: torch.Tensor,
        logprobs: torch.Tensor,
        distributions: torch.Tensor,
        spec,
    ) -> Sample:
        ids = tokens.tolist()
        finish = "length"
        ends = [k for k, token in enumerate(ids) if token in self._enders(spec)]
        if not spec.ignore_eos and ends:
            ids, finish = ids[: ends[0] + 1], "stop"
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        for stop in spec.stop:
            if stop in text:
                finish = "stop"
                text = text[: text.index(stop)]
        return Sample(
            prompt_ids=tuple(prompt),
            completion_ids=tuple(ids),
            text=text,
            logprobs=tuple(logprobs[: len(ids)].tolist()) if spec.logprobs else (),
            finish_reason=finish,
            weight_version=self.weight_version,
            top_logprobs=_top(distributions[: len(ids)], spec.top_logprobs),
        )

    def update_weights(self, state: dict, version: int) -> None:
        """Load a checkpoint-named state in place; asleep, keep it for the wake-up."""
        tensors = {name: torch.as_tensor(value) for name, value in state.items()}
        if self.asleep:
            self._host.update(to_transformers_names(tensors))
        else:
            self.model.load_state_dict(to_transformers_names(tensors), strict=True)
        self.weight_version = version

    def sleep(self, level: int) -> None:
        """Free the model's memory: level 1 keeps a host copy to wake from, level 2 nothing
        (the wake-up reloads the checkpoint; the next sync brings the trained weights)."""
        if self.asleep or level == 0:
            return
        if level == 2 and self.model_path is None:
            raise ValueError("an engine around someone else's model can sleep at level 1 only")
        tensors = dict(self.model.named_parameters()) | dict(self.model.named_buffers())
        self._host = (
            {
                name: t.detach().to("cpu", copy=self.device.type != "cpu")
                for name, t in tensors.items()
            }
            if level == 1
            else {}
        )
        self.model.to("meta")  # parameters and buffers dropped: their memory is free
        self.asleep = level

    def wake_up(self, tags: tuple[str, ...] | None = None) -> None:
        """Bring the weights back (the `weights` tag, or all); `kv_cache` alone does nothing."""
        if not self.asleep or (tags is not None and "weights" not in tags):
            return
        if self.asleep == 2:
            from selfcritic.model.build import load_model

            self.model = load_model(self.model_path, self.dtype, self.trust_remote_code).eval()
            self.weight_version = 0 if not self._host else self.weight_version
            self.model.to(self.device)
        else:
            self.model.to_empty(device=self.device)
            self.model.tie_weights()  # moving to meta unties shared tensors
        with torch.no_grad():
            for name, tensor in self._host.items():
                _tensor_named(self.model, name).copy_(tensor)
        self._host, self.asleep = {}, 0

    def shutdown(self) -> None:
        self.model = None


def _tensor_named(model, name: str) -> torch.Tensor:
    """The parameter or buffer `name` of `model`."""
    try:
        return model.get_parameter(name)
    except AttributeError:
        return model.get_buffer(name)


def _top(distributions: torch.Tensor, k: int) -> tuple[dict[int, float], ...]:
    """The k most likely tokens' logprobs at each position ([positions, vocab] log-probs)."""
    if k == 0:
        return ()
    values, indices = distributions.topk(k, dim=-1)
    return tuple(
        dict(zip(i.tolist(), v.tolist(), strict=True)) for i, v in zip(indices, values, strict=True)
    )
