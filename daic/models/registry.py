"""The model registry on the object store: versions, model cards, the champion pointer, lineage.

Layout (docs/CONTRACTS.md), for model ``<name>``::

    models/<name>/<version>/model.pt              champion-family weights (state_dict)
    models/<name>/<version>/shadow.pt             its shadow network's weights
    models/<name>/<version>/oracle_reference.npz  probs, embeddings, labels, shadow_probs on val
    models/<name>/<version>/shifted_reference.npz the same on corrupted val calibration rows
    models/<name>/<version>/card.json             ModelCard, written last: a version with a card is complete
    models/<name>/<version>/claim.json            who allocated the version number
    models/<name>/champion                        ChampionPointer JSON
    models/<name>/champion-history/<gen>.json     one record per promotion

Every version stores *both* networks: each training run trains (or fine-tunes) the main model and
its shadow together, so the disagreement oracle always compares a model with the shadow that
saw the same data.

Champion switch: the pointer is one object, so readers see the old or the new pointer, never a
mix. ``promote(version, expected_current=...)`` is a compare-and-set on the store's conditional
writes (daic.storage, S3's If-Match / If-None-Match): read the pointer and its ETag, compare with
what the caller decided against, then write the new pointer only if the ETag is still the one read
(create-if-absent for the first champion). Of two concurrent promotions exactly one write lands;
the other gets ``ChampionConflict`` and nothing of it is written. This holds across processes and
machines on both backends (file:// and any S3 server that honours conditional writes; the store
refuses one that does not). The history record ``champion-history/<gen>.json`` is written after
the pointer, create-if-absent, so it is never overwritten; a promoter that died in between leaves
it to the next promotion, which writes the current pointer's record first (so a store failing on
the record after the pointer landed is logged, not raised: the promotion happened). Version numbers are
claimed the same way (``claim.json`` created if absent).
"""
from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any, Optional

from daic.models.card import (
    VERSION_RE,
    ChampionPointer,
    DataLineage,
    ModelCard,
    check_name,
    check_version,
    version_id,
    version_number,
)
from daic.models.lineage import ancestry, render_tree
from daic.storage import KeyNotFound, ObjectStore, PreconditionFailed, StorageError
from daic.storage.parsed import CorruptObject, parse_object, read_object

MODEL_FILE = "model.pt"
SHADOW_FILE = "shadow.pt"
CARD_FILE = "card.json"
REFERENCE_FILE = "oracle_reference.npz"
SHIFTED_FILE = "shifted_reference.npz"
CLAIM_FILE = "claim.json"
CHAMPION = "champion"
_ANY = object()  # "do not check the current champion"


def check_weights(store: ObjectStore, key: str, net) -> None:
    """CorruptObject when a loaded network's parameters hold NaN/inf or a buffer holds NaN (buffers
    may hold inf on purpose: the filter's ``gate_entropy`` is inf while its gate is off)."""
    import torch

    for kind, tensors, ok in (("parameter", net.named_parameters(), torch.isfinite),
                              ("buffer", net.named_buffers(), lambda t: ~torch.isnan(t))):
        for name, t in tensors:
            if t.is_floating_point() and not bool(ok(t).all()):
                raise CorruptObject(f"{store.url}: object {key!r}: {kind} {name!r} holds "
                                    f"{'NaN or infinite' if kind == 'parameter' else 'NaN'} values")


class ChampionConflict(RuntimeError):
    """The champion changed under the caller (compare-and-set failed); nothing was written."""


class VersionNotFound(KeyNotFound):
    """No complete version (one with a card) of that name and id."""


def code_version() -> str:
    """``DAIC_CODE_VERSION`` (set when images are built) or ``<package version>+g<git sha>``."""
    from daic import __version__

    if os.environ.get("DAIC_CODE_VERSION"):
        return os.environ["DAIC_CODE_VERSION"]
    try:
        here = Path(__file__).resolve().parent
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return f"{__version__}+g{sha}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return __version__


class ModelRegistry:
    """The versions of one model ``name`` in ``store``."""

    def __init__(self, store: ObjectStore, name: str = "mnist") -> None:
        self.store = store
        self.name = check_name(name)
        self.prefix = f"models/{name}/"

    def _key(self, version: str, file: str) -> str:
        return f"{self.prefix}{check_version(version)}/{file}"

    # -- reading ------------------------------------------------------------------------------
    def _numbers_in_use(self) -> list[int]:
        numbers = set()
        for key in self.store.list(self.prefix):
            part = key[len(self.prefix):].split("/", 1)[0]
            if VERSION_RE.match(part):
                numbers.add(int(part[1:]))
        return sorted(numbers)

    def versions(self) -> list[str]:
        """Complete versions (with a card), oldest first."""
        done = {
            key[len(self.prefix):].split("/", 1)[0]
            for key in self.store.list(self.prefix)
            if key.endswith("/" + CARD_FILE)
        }
        return sorted((v for v in done if VERSION_RE.match(v)), key=version_number)

    def card(self, version: str) -> ModelCard:
        """The version's card; VersionNotFound when it has none, CorruptObject when the card is not a
        valid ModelCard of this model and version (a copied card, NaN metrics, fields missing)."""
        key = self._key(version, CARD_FILE)
        try:
            raw = self.store.get_json(key)
        except KeyNotFound:
            raise VersionNotFound(
                f"{self.store.url}: model {self.name!r} has no version {version!r} "
                f"(known: {', '.join(self.versions()) or 'none'})"
            ) from None
        card = parse_object(self.store, key, ModelCard, raw)
        if (card.name, card.version) != (self.name, version):
            raise CorruptObject(f"{self.store.url}: object {key!r} is the card of {card.name}/{card.version}, "
                                f"not of {self.name}/{version}")
        return card

    def cards(self) -> list[ModelCard]:
        return [self.card(v) for v in self.versions()]

    def champion_pointer(self) -> Optional[ChampionPointer]:
        """The pointer as stored (None when there is none; CorruptObject when it is not a pointer)."""
        try:
            return read_object(self.store, self.prefix + CHAMPION, ChampionPointer)
        except KeyNotFound:
            return None

    def champion(self) -> str:
        """The champion version; KeyNotFound when none has been promoted yet, CorruptObject when the
        pointer is unreadable or names a version that has no card."""
        pointer = self.champion_pointer()
        if pointer is None:
            raise KeyNotFound(f"{self.store.url}: model {self.name!r} has no champion yet")
        try:
            self.card(pointer.version)
        except VersionNotFound as exc:
            raise CorruptObject(f"{self.store.url}: object {self.prefix + CHAMPION!r} names version "
                                f"{pointer.version!r}, which does not exist ({exc})") from None
        return pointer.version

    def resolve(self, ref: str) -> str:
        """``"champion"``, ``"latest"`` or a version id -> an existing version id."""
        if ref == "champion":
            return self.champion()
        if ref == "latest":
            versions = self.versions()
            if not versions:
                raise VersionNotFound(f"{self.store.url}: model {self.name!r} has no versions")
            return versions[-1]
        self.card(ref)  # raises VersionNotFound / ValueError naming the version
        return ref

    def load_networks(self, version: str):
        """(model, shadow) of a version, on CPU, in eval mode."""
        card = self.card(version)
        return (self._network(card.arch, self._key(version, MODEL_FILE)),
                self._network(card.shadow_arch, self._key(version, SHADOW_FILE)))

    def _network(self, arch: str, key: str):
        """The network stored at ``key``; CorruptObject when the bytes are not weights of ``arch``
        (truncated, another archive, other shapes) or hold NaN/inf."""
        from daic.models.weights import network_from_bytes

        try:
            net = network_from_bytes(arch, self.store.get_bytes(key), source=key)
        except ValueError as exc:  # raised by network_from_bytes for each of those, naming the key
            raise CorruptObject(f"{self.store.url}: {exc}") from None
        check_weights(self.store, key, net)
        return net

    def weights_bytes(self, version: str) -> tuple[bytes, bytes]:
        """Raw (model, shadow) weights: what a warm start ships to Ray workers."""
        self.card(version)
        return (self.store.get_bytes(self._key(version, MODEL_FILE)),
                self.store.get_bytes(self._key(version, SHADOW_FILE)))

    def load_oracle_reference(self, version: str):
        """(OracleReference, ShiftedReference or None) of a version."""
        from daic.oracles.pipeline import ShiftedReference
        from daic.oracles.reference import OracleReference

        self.card(version)
        clean_key, shifted_key = self._key(version, REFERENCE_FILE), self._key(version, SHIFTED_FILE)
        clean = self._arrays_as(clean_key, OracleReference.from_arrays)
        shifted = self._arrays_as(shifted_key, ShiftedReference.from_arrays) if self.store.exists(shifted_key) else None
        return clean, shifted

    def _arrays_as(self, key: str, build):
        """``build(arrays of key)``; the ValueError a reference raises for a missing array, a wrong
        shape or dtype, or NaN becomes a CorruptObject naming the key."""
        arrays = self.store.get_arrays(key)
        try:
            return build(arrays)
        except ValueError as exc:
            raise CorruptObject(f"{self.store.url}: object {key!r} is not a valid oracle reference: {exc}") from None

    def parents(self) -> dict[str, Optional[str]]:
        return {c.version: c.parent for c in self.cards()}

    def ancestry(self, version: str) -> list[str]:
        return ancestry(self.parents(), version)

    def lineage_lines(self) -> list[str]:
        """The lineage forest as text, each version with its key figures and the champion marked."""
        cards = {c.version: c for c in self.cards()}
        pointer = self.champion_pointer()
        champ = pointer.version if pointer else None

        def label(v: str) -> str:
            c = cards[v]
            bits = [v]
            if "test_accuracy" in c.metrics:
                bits.append(f"test {100 * c.metrics['test_accuracy']:.2f}%")
            n_op = c.data.operational_count
            bits.append(f"+{n_op} labeled" if n_op else "base only")
            bits.append(c.created.strftime("%Y-%m-%d %H:%M"))
            if v == champ:
                bits.append("[champion]")
            return "  ".join(bits)

        return render_tree({v: c.parent for v, c in cards.items()}, label)

    # -- writing ------------------------------------------------------------------------------
    def _claim_version(self, attempts: int = 50) -> str:
        """Allocate the next version id: write a claim with a unique token and read it back."""
        for _ in range(attempts):
            used = self._numbers_in_use()
            version = version_id((used[-1] if used else 0) + 1)
            key = self._key(version, CLAIM_FILE)
            try:
                self.store.put_json(key, {"token": uuid.uuid4().hex, "pid": os.getpid()}, if_none_match=True)
            except PreconditionFailed:
                continue  # another registration claimed this number first
            return version
        raise StorageError(f"{self.store.url}: could not allocate a version of {self.name!r} "
                           f"after {attempts} attempts (heavy concurrent registration?)")

    def register(
        self,
        *,
        model,
        shadow,
        data: DataLineage,
        parent: Optional[str] = None,
        metrics: Optional[dict[str, float]] = None,
        history: Optional[list[dict[str, float]]] = None,
        train_config: Optional[dict] = None,
        reference_config=None,
        arch: str = "small_cnn",
        shadow_arch: str = "shadow_net",
        fit_assessor: bool = False,
    ) -> ModelCard:
        """Store a new version (weights, oracle references, then the card) and return its card.
        ``fit_assessor``: also fit the sidecar's assessor on the references and store it with the
        version (daic.models.assessor_store), so no sidecar fits it; a failed fit is logged and
        the sidecar fits it instead."""
        from daic.models.reference import ReferenceConfig, build_references
        from daic.models.weights import state_dict_to_bytes

        if parent is not None:
            self.card(parent)  # the parent must exist: lineage never points into the void
        reference_config = reference_config or ReferenceConfig(dataset=data.dataset)
        clean, shifted = build_references(model, shadow, reference_config)
        version = self._claim_version()
        self.store.put_bytes(self._key(version, MODEL_FILE), state_dict_to_bytes(model))
        self.store.put_bytes(self._key(version, SHADOW_FILE), state_dict_to_bytes(shadow))
        self.store.put_arrays(self._key(version, REFERENCE_FILE), **clean.to_arrays())
        if shifted is not None:
            self.store.put_arrays(self._key(version, SHIFTED_FILE), **shifted.to_arrays())
        if fit_assessor:
            from daic.models.assessor_store import fit_references_and_store

            try:
                fit_references_and_store(self.store, self.name, version, clean, shifted)
            except Exception as exc:  # noqa: BLE001 - optional: the sidecar fits it in the background
                import logging

                logging.getLogger(__name__).warning("%s %s: assessor not fitted at registration (%s: %s)",
                                                    self.name, version, type(exc).__name__, exc)
        card = ModelCard(
            name=self.name, version=version, parent=parent, arch=arch, shadow_arch=shadow_arch,
            code_version=code_version(), data=data,
            metrics={**(metrics or {}), "reference_val_accuracy": clean.accuracy},
            history=history or [], train_config=train_config or {},
        )
        self.store.put_json(self._key(version, CARD_FILE), card.model_dump(mode="json"))
        return card

    def promote(self, version: str, *, expected_current=_ANY) -> ChampionPointer:
        """Make ``version`` the champion (a compare-and-set; see the module docstring).

        ``expected_current``: the champion the caller based its decision on (None = "there is no
        champion yet"); when given and different from the actual one, raises ChampionConflict and
        writes nothing. A promotion that loses a race with another one also raises ChampionConflict
        and writes nothing, with or without ``expected_current``.
        """
        self.card(version)
        key = self.prefix + CHAMPION
        try:
            raw, etag = self.store.get_json_with_etag(key)
            current: Optional[ChampionPointer] = parse_object(self.store, key, ChampionPointer, raw)
        except KeyNotFound:
            current, etag = None, None
        if current is not None:
            self._record_history(current)  # in case its promoter died between pointer and history
        current_version = current.version if current else None
        if expected_current is not _ANY and expected_current != current_version:
            raise ChampionConflict(
                f"model {self.name!r}: expected champion {expected_current!r} but it is "
                f"{current_version!r}; re-read and decide again"
            )
        pointer = ChampionPointer(
            version=version, previous=current_version,
            generation=(current.generation + 1) if current else 1, token=uuid.uuid4().hex,
        )
        try:
            self.store.put_json_if_unchanged(key, pointer.model_dump(mode="json"), etag)
        except PreconditionFailed:
            now = self.champion_pointer()
            if now is None or now.token != pointer.token:
                raise ChampionConflict(
                    f"model {self.name!r}: the champion changed concurrently (now "
                    f"{now.version if now else None!r}, generation {now.generation if now else 0}); "
                    f"the promotion of {version!r} was not written; re-read and decide again"
                ) from None
        try:
            self._record_history(pointer)
        except StorageError as exc:  # the pointer landed: the promotion happened; the next one fills this in
            import logging

            logging.getLogger(__name__).warning("%s: champion is now %s (generation %d), but its history record "
                                                "was not written (%s); the next promotion writes it",
                                                self.name, version, pointer.generation, exc)
        return pointer

    def _record_history(self, pointer: ChampionPointer) -> None:
        """Write the pointer's history record if it is not there yet (never overwrites one)."""
        try:
            self.store.put_json(f"{self.prefix}champion-history/{pointer.generation:06d}.json",
                                pointer.model_dump(mode="json"), if_none_match=True)
        except PreconditionFailed:
            pass  # already recorded

    def champion_history(self) -> list[ChampionPointer]:
        keys = self.store.list(f"{self.prefix}champion-history/")
        return [read_object(self.store, k, ChampionPointer) for k in keys]


# -- module-level functions: the interface serving and the pipeline components call ----------
def list_models(store: ObjectStore) -> list[str]:
    """Names of models with at least one stored object."""
    return sorted({key.split("/")[1] for key in store.list("models/") if key.count("/") >= 2})


def champion(store: ObjectStore, name: str) -> str:
    return ModelRegistry(store, name).champion()


def set_champion(store: ObjectStore, name: str, version: str, expected_current=_ANY) -> ChampionPointer:
    return ModelRegistry(store, name).promote(version, expected_current=expected_current)


def load_networks(store: ObjectStore, name: str, version: str):
    return ModelRegistry(store, name).load_networks(version)


def load_card(store: ObjectStore, name: str, version: str) -> dict:
    return ModelRegistry(store, name).card(version).model_dump(mode="json")


def load_oracle_reference(store: ObjectStore, name: str, version: str):
    return ModelRegistry(store, name).load_oracle_reference(version)
