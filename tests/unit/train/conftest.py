"""What the method tests share: a spy on the trainable parameters (TRL's `test_train` pattern)."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
import torch
from transformers import TrainerCallback


class TrainableSnapshot(TrainerCallback):
    """The trainable parameters as training starts and as it ends (after any best-checkpoint reload)."""

    def __init__(self) -> None:
        self.before: dict[str, torch.Tensor] = {}
        self.after: dict[str, torch.Tensor] = {}

    @staticmethod
    def trainable(model: Any) -> dict[str, torch.Tensor]:
        return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.before = self.trainable(model)

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.after = self.trainable(model)

    def unchanged(self) -> list[str]:
        assert self.before, "no trainable parameters"
        return [name for name, tensor in self.before.items() if torch.equal(tensor, self.after[name])]


@pytest.fixture
def spy_on(monkeypatch: pytest.MonkeyPatch) -> Callable[[ModuleType], TrainableSnapshot]:
    """Adds a TrainableSnapshot to the callbacks a method module hands its trainer."""

    def attach(module: ModuleType) -> TrainableSnapshot:
        spy = TrainableSnapshot()
        shared = module.callbacks
        monkeypatch.setattr(module, "callbacks", lambda *args: [*shared(*args), spy])
        return spy

    return attach
