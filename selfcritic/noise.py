"""Known, harmless warnings dropped where they are logged, so that the warnings left all matter.

Silenced, each by a `logging.Filter` on the one logger that emits it:

- vLLM, at every weight sync (`WeightSyncExtension.load_named_tensors` installs the filter in the
  process that runs vLLM's worker, which is the one that logs):
  - `vllm.model_executor.model_loader.reload.inplace`: "Following weights were not loaded from
    checkpoint: {names}" where every name is an MLA attention's `W_UK_T` or `W_UV` (or
    `W_UK_T_dcp_qrep`, its decode-context-parallel copy). No checkpoint has them: MLA's
    `process_weights_after_loading` derives them from the `kv_b_proj` just loaded, right after
    the reload. A record that also names any other weight stays, listing only the others.
  - `vllm.model_executor.model_loader.reload.layerwise`: "<class>: Failed to load weights" for a
    rotary embedding (a class named `...RotaryEmbedding`). Its only tensor is the cos/sin cache,
    a non-persistent buffer computed from the config that no checkpoint holds; vLLM puts the
    existing cache back. The same message for any other layer stays.
- Ray, when selfcritic starts a local Ray (`start_ray` without `ray.address`; the filter is on
  only during that `ray.init`): `ray._private.authentication.authentication_token_setup`'s
  "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt
  out...": a notice that Ray 2.60's secure default is on, for a cluster only this run uses. Its
  switch, RAY_AUTH_MODE=token, is read once per process and so cannot be set after `import ray`,
  and RAY_AUTH_MODE=disabled would turn the protection off. Ray's warning that authentication is
  disabled, and anything Ray says when joining the user's own cluster, stay.

Left out: vLLM's start-up warnings (once per engine, each about a setting), and anything
outside these three messages.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

VLLM_INPLACE = "vllm.model_executor.model_loader.reload.inplace"
VLLM_LAYERWISE = "vllm.model_executor.model_loader.reload.layerwise"
RAY_AUTH = "ray._private.authentication.authentication_token_setup"

_NOT_LOADED = "Following weights were not loaded from checkpoint: %s"
_FAILED_TO_LOAD = "%s: Failed to load weights"
_DERIVED_MLA = frozenset({"W_UK_T", "W_UV", "W_UK_T_dcp_qrep"})
_RAY_TOKEN_ENABLED = "Token authentication is enabled for this Ray cluster."


def _args(record: logging.LogRecord) -> tuple:
    return record.args if isinstance(record.args, tuple) else (record.args,)


def is_derived_mla(name: str) -> bool:
    """Whether `name` is an MLA matrix that vLLM derives after loading (never in a checkpoint)."""
    return name.rsplit(".", 1)[-1] in _DERIVED_MLA


class ReloadNoise(logging.Filter):
    """Drops vLLM's reload warnings about tensors it derives itself (see the module)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = _args(record)
        if record.msg == _NOT_LOADED and len(args) == 1 and isinstance(args[0], set | frozenset):
            others = {name for name in args[0] if not is_derived_mla(str(name))}
            if not others:
                return False
            record.args = (others,)  # the derived names are no news; the others are
            return True
        if record.msg == _FAILED_TO_LOAD and len(args) == 1:
            return not str(args[0]).endswith("RotaryEmbedding")
        return True


class RayTokenNotice(logging.Filter):
    """Drops Ray's notice that token authentication is on (see the module)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_RAY_TOKEN_ENABLED)


_RELOAD_NOISE = ReloadNoise()


def silence_reload_noise() -> None:
    """Attach `ReloadNoise` to vLLM's two reload loggers in this process (once)."""
    for name in (VLLM_INPLACE, VLLM_LAYERWISE):
        logger = logging.getLogger(name)
        if _RELOAD_NOISE not in logger.filters:
            logger.addFilter(_RELOAD_NOISE)


@contextlib.contextmanager
def ray_token_notice_silenced() -> Iterator[None]:
    """`RayTokenNotice` on Ray's authentication logger for the duration of the block."""
    logger, notice = logging.getLogger(RAY_AUTH), RayTokenNotice()
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)
