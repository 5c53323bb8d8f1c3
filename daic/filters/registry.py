"""Filter versions in the model registry: ``models/<classifier>-filter/<version>/``.

A filter is a registry model of its own (versions, cards, claims and the pointer machinery of
daic.models.registry), with one network (``filter.pt``) and no oracle reference. Its card records
the classifier version it wraps (``data.notes["wraps"] = "<classifier>/<version>"`` and
``train_config.classifier_version``), its parent is the filter version it was fine-tuned from (the
generic filter for a cycle's adapted one), and its metrics hold the gate's threshold and the
accuracies measured at registration. The pointer ``champion`` of the filter model is the filter in
service (none: no filter).
"""
from __future__ import annotations

from typing import Optional

from daic.models.card import DataLineage, ModelCard
from daic.models.card import check_version
from daic.models.registry import CARD_FILE, ModelRegistry, check_weights, code_version
from daic.filters.network import FILTER_ARCH, FilterNet
from daic.storage.parsed import CorruptObject
# The service record is torch-free (daic.filters.service, for the deploy step's image); re-exported here.
from daic.filters.service import FOLLOW, SERVICE_FILE, FilterService, filter_model_name, read_service, write_service  # noqa: F401

FILTER_FILE = "filter.pt"




class FilterRegistry(ModelRegistry):
    def __init__(self, store, classifier: str = "mnist") -> None:
        super().__init__(store, filter_model_name(classifier))
        self.classifier = classifier

    def register_filter(self, *, net, data: DataLineage, wraps_version: str, parent: Optional[str] = None,
                        metrics: Optional[dict[str, float]] = None, history: Optional[list] = None,
                        train_config: Optional[dict] = None) -> ModelCard:
        from daic.models.weights import state_dict_to_bytes

        ModelRegistry(self.store, self.classifier).card(wraps_version)  # lineage never points into the void
        if parent is not None:
            self.card(parent)
        version = self._claim_version()
        self.store.put_bytes(self._key(version, FILTER_FILE), state_dict_to_bytes(net))
        card = ModelCard(name=self.name, version=version, parent=parent, arch=FILTER_ARCH, shadow_arch="none",
                         code_version=code_version(), data=data, metrics=metrics or {}, history=history or [],
                         train_config={**(train_config or {}), "classifier": self.classifier,
                                       "classifier_version": wraps_version})
        self.store.put_json(self._key(version, CARD_FILE), card.model_dump(mode="json"))
        return card

    def wraps(self, version: str) -> str:
        """The classifier version a filter version was trained for; CorruptObject when its card does
        not say (or says something that is not a version id)."""
        wrapped = self.card(version).train_config.get("classifier_version")
        try:
            return check_version(wrapped)
        except ValueError as exc:
            raise CorruptObject(f"{self.store.url}: object {self._key(version, CARD_FILE)!r}: "
                                f"train_config.classifier_version: {exc}") from None

    def state_dict(self, version: str) -> dict:
        from daic.models.weights import state_dict_from_bytes

        self.card(version)
        key = self._key(version, FILTER_FILE)
        try:
            return state_dict_from_bytes(self.store.get_bytes(key), source=key)
        except ValueError as exc:  # not a torch archive (truncated, other bytes); names the key
            raise CorruptObject(f"{self.store.url}: {exc}") from None

    def load_filter(self, version: str, classifier=None) -> FilterNet:
        """The filter, in eval mode; one whose state asks for the alignment search gets the
        classifier version it wraps as its aligner (``classifier``: that network, already loaded)."""
        import torch

        net = FilterNet()
        key = self._key(version, FILTER_FILE)
        state = self.state_dict(version)
        if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
            raise CorruptObject(f"{self.store.url}: object {key!r} is not a state_dict of tensors")
        try:
            net.load_state_dict(state)
        except (RuntimeError, KeyError, ValueError) as exc:  # torch's missing/unexpected keys, size mismatch
            raise CorruptObject(f"{self.store.url}: object {key!r} does not fit the filter network: "
                                f"{str(exc)[:300]}") from None
        check_weights(self.store, key, net)
        if net.searches:
            if classifier is None:
                classifier, _ = ModelRegistry(self.store, self.classifier).load_networks(self.wraps(version))
            net.attach_aligner(classifier)
        return net.eval()
