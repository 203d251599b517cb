"""One rank of the learner group: the `Learner` on an FSDP2-sharded model and a slice of the batch.

FSDP2 gathers each layer's parameters in every forward and backward and reduce-scatters the
gradients after each backward: collectives that every rank must enter in the same order. A rank
whose slice needs fewer micro-batches in a phase (policy, calibration, PTX) than the busiest rank
therefore runs "dummy" passes at the end of that phase: the same sequence of forwards and
backward on a two-token input with a loss of exactly zero, its attention maxima and router
counts discarded. `phase_passes` counts the micro-batches of a slice, so the group's driver can
tell every rank how many passes each phase takes (the maximum over ranks).
"""

from __future__ import annotations

from pathlib import Path

import torch

from selfcritic.config import LearnerConfig
from selfcritic.learner.device import compute_dtype, load_sharded, rank_device
from selfcritic.learner.distributed import BatchTotals
from selfcritic.learner.learner import Learner, PolicyBatch, token_micro_batches

PHASES = ("policy", "calibration", "ptx")


def phase_passes(batch: PolicyBatch, cfg: LearnerConfig) -> dict[str, int]:
    """Micro-batches the `Learner` runs for each phase of `batch` (0 when it skips the phase)."""
    limit = cfg.max_tokens_per_micro_batch
    policy = [len(p) + len(c) for p, c in zip(batch.prompts, batch.completions, strict=True)]
    calibration = [len(e.prompt_ids) for e in batch.critic_examples]
    ptx = [len(context) + len(target) for context, target in batch.ptx_sequences]
    return {
        "policy": len(token_micro_batches(policy, limit)) if policy else 0,
        "calibration": len(token_micro_batches(calibration, limit))
        if calibration and cfg.calibration_weight > 0
        else 0,
        "ptx": len(token_micro_batches(ptx, limit)) if ptx and cfg.ptx_weight > 0 else 0,
    }


class ShardedLearner(Learner):
    """A `Learner` whose models are sharded with FSDP2 inside an initialised process group,
    each rank loading only its shards, on its device (`learner.device`), computing in
    `learner.compute_dtype`."""

    def _load_model(self, model_path: Path, trainable: bool) -> torch.nn.Module:
        device = rank_device(self.cfg.device)
        return load_sharded(
            model_path,
            device,
            compute_dtype(self.cfg.compute_dtype, device),
            activation_checkpointing=self.cfg.activation_checkpointing and trainable,
            # the frozen reference never runs a backward: reshard its root after each forward
            reshard_root=None if trainable else True,
            trust_remote_code=self.trust_remote_code,
        )

    def step_slice(
        self, batch: PolicyBatch, totals: BatchTotals, passes: dict[str, int]
    ) -> dict[str, float]:
        """Gradients of this rank's slice (normalised by `totals`), padded to `passes` per
        phase with dummy passes; then the optimizer step, identical on every rank."""
        mine = phase_passes(batch, self.cfg)
        metrics = self._policy_terms(batch, totals) if mine["policy"] else {}
        self._dummy_passes(passes["policy"] - mine["policy"], with_reference=True)
        if mine["calibration"]:
            metrics["calibration_loss"] = self._calibration_term(batch.critic_examples, totals)
        self._dummy_passes(passes["calibration"] - mine["calibration"], with_reference=False)
        if mine["ptx"]:
            metrics["ptx_loss"] = self._ptx_term(batch, totals)
        self._dummy_passes(passes["ptx"] - mine["ptx"], with_reference=False)
        return self._optimizer_step(metrics, batch.lr_scale)

    @torch.no_grad()
    def own_logprobs_slice(self, batch: PolicyBatch, passes: int) -> list[tuple[float, ...]]:
        """`own_logprobs` of this rank's slice, padded to `passes` forwards (FSDP2 gathers each
        layer in every forward: every rank runs as many)."""
        found = self.own_logprobs(batch) if batch.prompts else []
        mine = phase_passes(batch, self.cfg)["policy"]
        ids = torch.full((1, 2), self.pad_id, dtype=torch.long, device=self.device)
        with self.unrecorded():
            for _ in range(passes - mine):
                self.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
        return found

    def _dummy_passes(self, count: int, with_reference: bool) -> None:
        """`count` forward(s)+backward with zero loss: the collectives of a real micro-batch.
        A policy pass also runs the reference's forward, as a real policy micro-batch does."""
        if count <= 0:
            return
        ids = torch.full((1, 2), self.pad_id, dtype=torch.long, device=self.device)
        attention = torch.ones_like(ids)
        with self.unrecorded():
            for _ in range(count):
                logits = self.model(input_ids=ids, attention_mask=attention, use_cache=False)
                if with_reference and self.reference is not None:
                    with torch.no_grad():
                        self.reference(input_ids=ids, attention_mask=attention, use_cache=False)
                (logits.logits.float().sum() * 0.0).backward()

    def save_state(self, directory: str) -> None:
        """Model and optimizer state, each rank writing its shards (a collective: DCP)."""
        import torch.distributed.checkpoint as dcp

        dcp.save(self._state(), checkpoint_id=directory)

    def load_state(self, directory: str) -> None:
        """The state `save_state` wrote, resharded to this group if its size differs."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import set_state_dict

        state = self._state()
        dcp.load(state, checkpoint_id=directory)
        set_state_dict(
            self.model,
            list(self.optimizer.optimizers.values()),
            model_state_dict=state["model"],
            optim_state_dict=state["optim"],
        )

    def _state(self) -> dict:
        """DCP's sharded views of the model and of both inner optimizers (Muon, AdamW)."""
        from torch.distributed.checkpoint.state_dict import get_state_dict

        optimizers = list(self.optimizer.optimizers.values())
        model, optim = get_state_dict(self.model, optimizers)
        return {"model": model, "optim": optim}
