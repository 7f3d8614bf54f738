"""Stop a run whose loss or gradient is no longer a number, instead of training on garbage to the end.

Once a step produces NaN or infinity the weights it updates are NaN too, every later step trains on
nothing, and the run would still end `completed` with weights that generate nothing. transformers
would also hide it: by default it replaces a NaN step's loss with the running mean before logging
(`logging_nan_inf_filter`), which hone turns off so the logged loss says what happened.
"""

from __future__ import annotations

import math
from typing import Any

from transformers import TrainerCallback

from hone.errors import HoneError

# Logged figures that must stay finite; grad_norm is left out under fp16, where the loss scaler
# overflows on purpose now and then (and skips that step).
CHECKED = ("loss", "grad_norm", "eval_loss", "train_loss")


def non_finite(logs: dict[str, Any], fp16: bool) -> list[str]:
    """`name is nan` for each checked figure in one log record that is NaN or infinite."""
    found = []
    for name in CHECKED:
        value = logs.get(name)
        if name == "grad_norm" and fp16:
            continue
        if isinstance(value, (int, float)) and not math.isfinite(value):
            found.append(f"{name} is {value}")
    return found


class StopOnNonFinite(TrainerCallback):
    """Raises a HoneError at the first log whose loss or gradient norm is NaN or infinite.

    It checks what the Trainer logs (every `train.logging_steps` steps, and at each validation), so a
    run diverges for at most that many steps before it stops; the pipeline marks the run failed.
    """

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        problems = non_finite(logs or {}, fp16=bool(args.fp16))
        if not problems:
            return
        fp16 = "; or train in bf16 or fp32 (train.precision), which overflow far later than fp16"
        raise HoneError(
            f"training diverged at step {state.global_step}: {', '.join(problems)}. "
            f"Lower train.learning_rate (it is {args.learning_rate:g}) or check the training data for "
            f"broken examples{fp16 if args.fp16 else ''}"
        )
