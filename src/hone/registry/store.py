"""The registry's store: MLflow registered models, versions, tags and aliases, and hone's audit trail.

A version is written in an order that a crash cannot break: the run's files are staged and hashed in a
temporary folder, uploaded to a new MLflow run's artifacts, and only then is the version created, with
every lineage tag, in one database transaction. A process killed at any point leaves at most an MLflow run
with no version pointing at it; it never leaves a version pointing at missing or partial files.

The audit trail (every promotion, refusal, forced promotion and rollback) is kept as tags of the
registered model, one per event (`hone.audit.<nanoseconds>.<pid>`), so two processes never overwrite each
other's records and any MLflow store (SQLite, a tracking server, Postgres) holds it.
"""

from __future__ import annotations

import getpass
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse
from urllib.request import url2pathname

from pydantic import Field

from hone.contract import Record
from hone.errors import HoneError, quoted
from hone.models.resolve import hone_home
from hone.models.trained import check_weights
from hone.registry.bundle import folder_files, lineage_tags, stage, verify_folder
from hone.registry.refs import Ref, check_alias, check_name
from hone.runs import now, open_finished_run
from hone.track import (
    METRICS_PER_BATCH,
    PARAMS_PER_BATCH,
    batches,
    default_tracking_uri,
    experiment_id,
    mlflow_client,
    run_metrics,
    run_params,
    run_tags,
)

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

REGISTRY_EXPERIMENT = "hone-registry"  # the MLflow experiment whose runs hold the versions' files
AUDIT_PREFIX = "hone.audit."
Action = Literal["promote", "refuse", "force", "rollback"]


class AuditRecord(Record):
    """One promotion, refusal, forced promotion or rollback of an alias."""

    at: str
    user: str
    action: Action
    alias: str
    from_version: int | None = Field(None, description="The alias's holder before (None: it had none).")
    to_version: int | None = Field(None, description="The version the alias was (or would have been) given.")
    reason: str | None = None
    gate: list[dict[str, Any]] = Field(default_factory=list, description="Each rule with its numbers.")
    ladder: str | None = Field(None, description="The evaluation the gate read.")


@dataclass
class Version:
    """One registered model version, with its hone tags."""

    name: str
    version: int
    source: str
    run_id: str | None
    created: int  # milliseconds since the epoch, as MLflow keeps it
    description: str
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    @property
    def rung_name(self) -> str:
        """Its rung in a ladder (`support-v3`: a rung name is also a file name, so no `/`)."""
        return f"{self.name}-v{self.version}"

    @property
    def sha256(self) -> str:
        return self.tags.get("hone.sha256", "")

    def tag_json(self, key: str, default: Any = None) -> Any:
        text = self.tags.get(key)
        return default if text is None else json.loads(text)

    @classmethod
    def from_mlflow(cls, model_version: ModelVersion) -> Version:
        return cls(
            name=model_version.name,
            version=int(model_version.version),
            source=model_version.source,
            run_id=model_version.run_id,
            created=int(model_version.creation_timestamp or 0),
            description=model_version.description or "",
            tags=dict(model_version.tags or {}),
            aliases=list(model_version.aliases or []),
        )


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container's uid without a passwd entry)
        return f"uid {os.getuid()}"


@contextmanager
def mlflow_errors(what: str) -> Iterator[None]:
    """MLflow's 'does not exist' and 'invalid' errors as HoneErrors naming what was asked for."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            raise HoneError(f"{what}: {exc.message}") from None
        raise


class Registry:
    """The registry in one MLflow store (SQLite in `.hone/` by default)."""

    def __init__(self, uri: str | None = None) -> None:
        self.uri = uri or default_tracking_uri()
        self.client = mlflow_client(self.uri)

    # Versions -----------------------------------------------------------------------------------------

    def add(self, run_path: Path, name: str) -> Version:
        """Register a completed training run as the next version of `name`."""
        check_name(name)
        run = open_finished_run(Path(run_path), "are registered")
        check_weights(run.weights)
        with tempfile.TemporaryDirectory(prefix="hone-register-") as temporary:
            staged = Path(temporary) / "version"
            staged.mkdir()
            evaluations = stage(run, staged)
            files = folder_files(staged)
            tags = lineage_tags(run, files, evaluations, staged)
            tags.update({"hone.registered_by": os_user(), "hone.registered_at": now()})
            run_id = self.upload(run.path, staged, name)
        self.ensure_model(name)
        source = self.client.get_run(run_id).info.artifact_uri
        headline = run.manifest.metrics
        description = f"{run.method} {run.kind} of {run.manifest.base_model.reference} (run {run.name})"
        if headline:
            description += ": " + ", ".join(f"{key} {value:.3f}" for key, value in list(headline.items())[:3])
        with mlflow_errors(f"registry name {quoted(name)}"):
            created = self.client.create_model_version(
                name, source, run_id=run_id, tags=tags, description=description
            )
        return Version.from_mlflow(created)

    def upload(self, run_path: Path, staged: Path, name: str) -> str:
        """A FINISHED MLflow run holding the staged files, the run's params and metrics; returns its id.

        A failure marks the MLflow run FAILED; no version is created for it.
        """
        from hone.runs import RunFolder

        run = RunFolder.open(run_path)
        manifest = run.manifest
        experiment = experiment_id(self.client, REGISTRY_EXPERIMENT, self.uri)
        created = self.client.create_run(
            experiment, run_name=f"{name} <- {manifest.name}", tags=run_tags(manifest)
        )
        run_id = created.info.run_id
        try:
            for params in batches(run_params(run, manifest), PARAMS_PER_BATCH):
                self.client.log_batch(run_id, params=params)
            for metrics in batches(run_metrics(run), METRICS_PER_BATCH):
                self.client.log_batch(run_id, metrics=metrics)
            self.client.log_artifacts(run_id, str(staged))
        except BaseException:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id, status="FINISHED")
        return run_id

    def ensure_model(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name, description="Registered by hone.")
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # another process registered it first
                raise

    def names(self) -> list[str]:
        return sorted(model.name for model in self.client.search_registered_models(max_results=1000))

    def model_exists(self, name: str) -> None:
        check_name(name)
        if name not in self.names():
            known = ", ".join(self.names()) or "none yet"
            raise HoneError(f"registry: no model named {quoted(name)} (registered: {known})")

    def versions(self, name: str | None = None) -> list[Version]:
        """Every version of `name` (every model's when None), newest first."""
        query = f"name = '{check_name(name)}'" if name else None
        found = [Version.from_mlflow(v) for v in self.client.search_model_versions(query, max_results=10_000)]
        aliases: dict[str, dict[str, str]] = {}  # a search leaves the versions' aliases out
        for version in found:
            if version.name not in aliases:
                aliases[version.name] = self.client.get_registered_model(version.name).aliases
            version.aliases = sorted(a for a, v in aliases[version.name].items() if int(v) == version.version)
        return sorted(found, key=lambda v: (v.name, -v.version))

    def version(self, ref: Ref) -> Version:
        """The version a reference names; a HoneError when the name, version or alias is unknown."""
        from mlflow.exceptions import MlflowException

        self.model_exists(ref.name)
        if ref.alias:
            try:
                found = self.client.get_model_version_by_alias(ref.name, ref.alias)
            except MlflowException:
                aliases = sorted(self.client.get_registered_model(ref.name).aliases)
                raise HoneError(
                    f"{ref}: {ref.name} has no alias {quoted(ref.alias)} "
                    f"(its aliases: {', '.join(aliases) or 'none yet'})"
                ) from None
            return self.tagged(Version.from_mlflow(found))
        if ref.version is None:
            versions = self.versions(ref.name)
            if not versions:
                raise HoneError(f"{ref}: {ref.name} has no versions")
            return versions[0]
        try:
            return Version.from_mlflow(self.client.get_model_version(ref.name, str(ref.version)))
        except MlflowException:
            newest = max((v.version for v in self.versions(ref.name)), default=0)
            raise HoneError(f"{ref}: {ref.name} has no version {ref.version} (newest: {newest})") from None

    def tagged(self, version: Version) -> Version:
        """The same version with its tags (MLflow's alias lookup may leave them out)."""
        if version.tags:
            return version
        return Version.from_mlflow(self.client.get_model_version(version.name, str(version.version)))

    def folder(self, version: Version) -> Path:
        """The version's files on this machine, checked against its content hash; a HoneError if they differ.

        A local store is read in place; a remote one is downloaded once into hone's cache (and checked on
        every load all the same).
        """
        files = version.tag_json("hone.files")
        if files is None or not version.sha256:
            raise HoneError(f"{version.ref}: not registered by hone (no content hash); register it with hone")
        source = urlparse(version.source)
        if source.scheme in ("", "file"):
            folder = Path(url2pathname(source.path))
        else:
            folder = hone_home() / "registry" / version.sha256
            if not folder.is_dir():
                self.download(version, folder)
        verify_folder(folder, files, version.sha256, version.ref)
        return folder

    def download(self, version: Version, folder: Path) -> None:
        from mlflow.artifacts import download_artifacts

        folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".download-") as temporary:
            fetched = Path(download_artifacts(artifact_uri=version.source, dst_path=temporary))
            os.replace(fetched, folder)

    # Aliases and the audit trail ----------------------------------------------------------------------

    def holder(self, name: str, alias: str) -> Version | None:
        """The version an alias points to, or None."""
        from mlflow.exceptions import MlflowException

        check_alias(alias)
        try:
            return self.tagged(Version.from_mlflow(self.client.get_model_version_by_alias(name, alias)))
        except MlflowException:
            return None

    def point(self, name: str, alias: str, version: int) -> None:
        self.client.set_registered_model_alias(name, check_alias(alias), str(version))

    def record(self, name: str, record: AuditRecord) -> None:
        key = f"{AUDIT_PREFIX}{time.time_ns():020d}.{os.getpid()}"
        self.client.set_registered_model_tag(name, key, record.model_dump_json(exclude_none=True))

    def history(self, name: str) -> list[AuditRecord]:
        """Every audit record of `name`, oldest first."""
        self.model_exists(name)
        tags = self.client.get_registered_model(name).tags
        keys = sorted(key for key in tags if key.startswith(AUDIT_PREFIX))
        return [AuditRecord.model_validate_json(tags[key]) for key in keys]

    def set_tag(self, version: Version, key: str, value: str) -> None:
        self.client.set_model_version_tag(version.name, str(version.version), key, value)


def previous_holder(records: list[AuditRecord], alias: str, current: int) -> int | None:
    """The version the alias held before `current`, replaying its promotions (push) and rollbacks (pop).

    Rolling back twice goes two promotions back; a promotion after a rollback starts from where it left.
    """
    stack: list[int] = []
    for record in records:
        if record.alias != alias or record.to_version is None:
            continue
        if record.action in ("promote", "force"):
            stack.append(record.to_version)
        elif record.action == "rollback" and stack:
            stack.pop()
    if current in stack:
        index = len(stack) - 1 - stack[::-1].index(current)
        return stack[index - 1] if index > 0 else None
    return stack[-1] if stack else None


def candidate_folders(values: list[str], uri: str | None = None) -> tuple[list[Path], dict[Path, str]]:
    """Run folders for `--candidate` values: a path as it is, a registered version (`NAME/3`,
    `NAME@production`) as its checked files; with the rung name each version is shown under."""
    from hone.registry.refs import is_ref, parse_ref

    folders: list[Path] = []
    names: dict[Path, str] = {}
    registry: Registry | None = None
    for value in values:
        path = Path(value)
        if path.exists() or not is_ref(value):
            folders.append(path)
            continue
        registry = registry or Registry(uri)
        version = registry.version(parse_ref(value))
        folder = registry.folder(version)
        folders.append(folder)
        names[folder] = version.rung_name
    return folders, names
