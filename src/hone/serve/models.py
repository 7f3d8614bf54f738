"""What a request's `model` names, resolved to the weights that answer it.

A request to a fine-tuned model that carries no system message gets the system prompt the model was
trained under (as the Ollama Modelfile's SYSTEM line does), so a client need not know it.

A request may name the base model (its reference, or `base`), a run folder, a registered version
(`support/3`), a registry alias (`support@production`) or a route (a weighted split between references,
sticky per `user`). An alias is re-read from the registry every `serve.refresh_seconds`, so a promote or a
rollback takes effect within that time without a restart; a request keeps the version it was resolved to
until it finishes.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from hone.config import ServeFile
from hone.errors import HoneError
from hone.export.ollama import run_system_prompt
from hone.registry.refs import is_ref, parse_ref
from hone.registry.store import Registry
from hone.runs import open_language_model_run

BASE = "base"


@dataclass(frozen=True)
class Target:
    """The weights that answer a request: the base alone, or an adapter (`key`) over it."""

    key: str  # "base", "support/3", or "run:<folder>": what the engine loads and keys its adapters by
    label: str  # what the response's `model` and x-hone-model-version say answered
    adapter: Path | None = None  # the LoRA adapter folder; None: the base model
    system: str | None = None  # the system prompt it was trained under: sent when a request has none


class UnknownModel(HoneError):
    """A request names no model this server can load (an HTTP 404 rather than an input error)."""


class Resolver:
    """Request model names -> Targets, following registry aliases with a time-to-live."""

    def __init__(self, settings: ServeFile, registry: Registry | None = None) -> None:
        self.settings = settings
        self.base_reference = settings.serve.base_model or settings.model.reference
        self._registry = registry
        self._aliases: dict[str, tuple[float, Target]] = {}
        self._versions: dict[str, Target] = {}
        self._lock = threading.Lock()

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry(self.settings.track.uri)
        return self._registry

    def names(self) -> list[str]:
        """What `GET /v1/models` lists: the base, every route, every registered version's aliases."""
        listed = [BASE, *self.settings.serve.routes]
        try:
            versions = self.registry.versions()
        except Exception:  # a store that cannot be read still serves the base and the routes
            versions = []
        for version in versions:
            if version.tags.get("hone.base_model") == self.base_reference:
                listed += [f"{version.name}@{alias}" for alias in version.aliases]
                listed.append(version.ref)
        return listed

    def resolve(self, name: str, user: str | None = None) -> Target:
        """The Target for a request's `model` (a route picks one of its references first)."""
        routes = self.settings.serve.routes
        if name in routes:  # the picked reference first; if it cannot answer (a canary alias not yet set)
            chosen = pick(routes[name], user, name)  # the route's others take its share
            fallbacks = [
                reference for reference, weight in routes[name].items() if weight and reference != chosen
            ]
            for reference in [chosen, *fallbacks]:
                try:
                    return self.direct(reference)
                except UnknownModel as exc:
                    missing = exc
            raise UnknownModel(f"route {name!r}: none of its models can answer: {missing}")
        return self.direct(name)

    def direct(self, name: str) -> Target:
        """The Target of a model name that is not a route."""
        if name in (BASE, self.base_reference):
            return Target(BASE, self.base_reference)
        if is_ref(name):
            ref = parse_ref(name)
            if ref.alias:
                return self.alias(name)
            return self.version(name)
        folder = Path(name)
        if folder.is_dir():
            return self.run_folder(folder)
        raise UnknownModel(
            f"model {name!r}: not the base model, a route, a run folder, NAME/VERSION or NAME@ALIAS"
        )

    def alias(self, name: str) -> Target:
        now = time.monotonic()
        with self._lock:
            cached = self._aliases.get(name)
        if cached is not None and now - cached[0] < self.settings.serve.refresh_seconds:
            return cached[1]
        ref = parse_ref(name)
        assert ref.alias is not None
        holder = self.registry.holder(ref.name, ref.alias)
        if holder is None:
            raise UnknownModel(f"model {name!r}: {ref.name} has no alias {ref.alias!r}")
        target = self.version(holder.ref)
        with self._lock:
            self._aliases[name] = (now, target)
        return target

    def version(self, name: str) -> Target:
        with self._lock:
            if name in self._versions:
                return self._versions[name]
        try:
            version = self.registry.version(parse_ref(name))
        except HoneError as exc:
            raise UnknownModel(str(exc)) from None
        if version.tags.get("hone.adapter") == "full":
            raise UnknownModel(f"model {name!r}: a full fine-tune; this server serves adapters over one base")
        if version.tags.get("hone.base_model") != self.base_reference:
            raise UnknownModel(
                f"model {name!r}: trained on {version.tags.get('hone.base_model')!r}, not on the served base "
                f"{self.base_reference!r}"
            )
        rank = version.tags.get("hone.lora_rank")
        if rank is not None and int(rank) > self.settings.serve.max_lora_rank:
            raise UnknownModel(f"model {name!r}: LoRA rank {rank} is above serve.max_lora_rank")
        folder = self.registry.folder(version)  # hash-checked before anything is loaded from it
        weights = folder / version.tags.get("hone.weights", "adapter")
        target = Target(version.ref, version.ref, weights, version.tags.get("hone.system_prompt") or None)
        with self._lock:
            self._versions[name] = target
        return target

    def run_folder(self, folder: Path) -> Target:
        try:
            run = open_language_model_run(folder, "are served")
        except HoneError as exc:
            raise UnknownModel(str(exc)) from None
        if run.kind == "full":
            raise UnknownModel(
                f"model {str(folder)!r}: a full fine-tune; this server serves adapters over one base"
            )
        if run.manifest.base_model.reference != self.base_reference:
            raise UnknownModel(
                f"model {str(folder)!r}: trained on {run.manifest.base_model.reference!r}, not on the served "
                f"base {self.base_reference!r}"
            )
        key = f"run:{folder.resolve()}"
        return Target(key, run.name, run.weights, run_system_prompt(run).text)


def pick(weights: dict[str, int], user: str | None, route: str) -> str:
    """One reference of a route, by weight: the same `user` always gets the same one (sticky canary)."""
    total = sum(weights.values())
    if total <= 0:
        raise UnknownModel(f"route {route!r}: its weights add up to 0")
    if user:
        digest = hashlib.sha256(f"{route}\0{user}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") % total
    else:
        point = random.randrange(total)
    for reference, weight in weights.items():
        if point < weight:
            return reference
        point -= weight
    raise AssertionError("unreachable")
