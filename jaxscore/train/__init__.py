"""Training: state, pure step, data-parallel wrappers, orbax checkpoints, the loop.

Layering: this package depends only on jax/optax/orbax/flax.struct/ml_collections; it takes a
``loss_fn(params, key, batch) -> (loss, aux)`` and plain pytrees, never a model or SDE.
"""

from jaxscore.train.checkpoint import (
    CheckpointFallbackWarning,
    Checkpointer,
    CheckpointStructureError,
    ConfigMismatchError,
    CorruptCheckpointError,
    check_config,
    fingerprint,
    restore_params,
)
from jaxscore.train.logging import MetricsWriter, read_metrics
from jaxscore.train.loop import Hook, NonFiniteError, TrainResult, train
from jaxscore.train.parallel import (
    MODES,
    Parallel,
    Pmap,
    Sharded,
    SingleDevice,
    make_parallel,
    maybe_initialize_distributed,
)
from jaxscore.train.settings import DEFAULTS, LoopSettings, default_config
from jaxscore.train.state import (
    TrainState,
    create_train_state,
    ema_decay,
    ema_rate_from_config,
    ema_update,
    ema_warmup_from_config,
    init_train_state,
    lr_at,
    make_lr_schedule,
    make_optimizer,
)
from jaxscore.train.step import multi_step, train_step

__all__ = [
    "DEFAULTS",
    "MODES",
    "CheckpointFallbackWarning",
    "CheckpointStructureError",
    "Checkpointer",
    "ConfigMismatchError",
    "CorruptCheckpointError",
    "Hook",
    "LoopSettings",
    "MetricsWriter",
    "NonFiniteError",
    "Parallel",
    "Pmap",
    "Sharded",
    "SingleDevice",
    "TrainResult",
    "TrainState",
    "check_config",
    "create_train_state",
    "default_config",
    "ema_decay",
    "ema_rate_from_config",
    "ema_update",
    "ema_warmup_from_config",
    "fingerprint",
    "init_train_state",
    "lr_at",
    "make_lr_schedule",
    "make_optimizer",
    "make_parallel",
    "maybe_initialize_distributed",
    "multi_step",
    "read_metrics",
    "restore_params",
    "train",
    "train_step",
]
