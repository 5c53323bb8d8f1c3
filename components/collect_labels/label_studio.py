"""``label-studio``: label in a Label Studio server, through its REST API.

Submitting creates a project with an image + single-choice labeling interface (classes 0-9 and
"unsure"), imports one task per sampled input (the image as a PNG data URI, the input id in the
task data), and remembers the project id in ``cycles/<cycle>/label-studio.json`` so a retried step
does not create a second project. Polling exports the project's tasks as JSON and reads the choice
of the latest non-cancelled annotation of each.

Endpoints (Label Studio 1.x): ``POST /api/projects``, ``POST /api/projects/<id>/import``,
``GET /api/projects/<id>/export?exportType=JSON``; authentication is a header
``Authorization: Token <key>`` (a legacy token; set ``LABEL_STUDIO_AUTH_SCHEME=Bearer`` for an
access token). The server and key come from ``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY`` (a
Kubernetes Secret on a cluster), never from pipeline parameters, which the Kubeflow UI shows.
Encoding the PNGs needs Pillow (in the ``dev`` extra; add it to an image that uses this backend).
"""
from __future__ import annotations

import base64
import io
import os

import numpy as np
import requests

from daic.components import cycle_store
from daic.storage import KeyNotFound, ObjectStore

from .request import Answers, LabelRequest

CLASSES = tuple(str(c) for c in range(10))
UNSURE = "unsure"


def label_config() -> str:
    choices = "".join(f'<Choice value="{c}"/>' for c in (*CLASSES, UNSURE))
    return ('<View><Image name="image" value="$image" zoom="true"/>'
            f'<Choices name="label" toName="image" choice="single" showInline="true">{choices}</Choices>'
            '<Text name="info" value="model says $prediction"/></View>')


def png_data_uri(image: np.ndarray) -> str:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - depends on the image
        raise RuntimeError("the label-studio backend needs Pillow to encode images (pip install pillow)") from None
    buf = io.BytesIO()
    Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8), mode="L").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def choice_of(task: dict) -> int | None | str:
    """The label in an exported task: class index, None for "unsure", "" when not annotated yet."""
    for annotation in reversed(task.get("annotations") or []):
        if annotation.get("was_cancelled"):
            continue
        for result in annotation.get("result") or []:
            choices = (result.get("value") or {}).get("choices") or []
            if choices:
                value = str(choices[0])
                if value == UNSURE:
                    return None
                if value not in CLASSES:
                    raise ValueError(f"Label Studio task {task.get('id')}: unexpected choice {value!r}")
                return int(value)
    return ""


class LabelStudioBackend:
    name = "label-studio"

    def __init__(self, store: ObjectStore, url: str = "", api_key: str = "", timeout_s: float = 30.0) -> None:
        self.store = store
        self.url = (url or os.environ.get("LABEL_STUDIO_URL", "")).rstrip("/")
        key = api_key or os.environ.get("LABEL_STUDIO_API_KEY", "")
        if not self.url:
            raise ValueError("the label-studio backend needs a server: set label_studio_url or LABEL_STUDIO_URL")
        if not key:
            raise ValueError("the label-studio backend needs LABEL_STUDIO_API_KEY (an access token)")
        scheme = os.environ.get("LABEL_STUDIO_AUTH_SCHEME", "Token")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"{scheme} {key}"
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, **kwargs):
        response = self.session.request(method, self.url + path, timeout=self.timeout_s, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"Label Studio {method} {path} answered {response.status_code}: {response.text[:300]}")
        return response.json()

    def _project_id(self, cycle: str) -> int | None:
        try:
            return int(self.store.get_json(cycle_store.key(cycle, "label-studio.json"))["project"])
        except KeyNotFound:
            return None

    def submit(self, request: LabelRequest) -> None:
        if self._project_id(request.cycle) is not None:
            return
        project = self._call("POST", "/api/projects",
                             json={"title": f"daic {request.cycle}", "label_config": label_config()})
        tasks = [{"data": {"image": png_data_uri(img), "daic_id": str(i), "prediction": int(p)}}
                 for i, img, p in zip(request.ids, request.inputs, request.predictions)]
        self._call("POST", f"/api/projects/{project['id']}/import", json=tasks)
        self.store.put_json(cycle_store.key(request.cycle, "label-studio.json"),
                            {"url": self.url, "project": int(project["id"]), "tasks": len(tasks)})

    def poll(self, request: LabelRequest) -> Answers:
        project = self._project_id(request.cycle)
        if project is None:
            raise RuntimeError(f"cycle {request.cycle!r} was never submitted to Label Studio")
        exported = self._call("GET", f"/api/projects/{project}/export", params={"exportType": "JSON"})
        answers: Answers = {}
        for task in exported:
            label = choice_of(task)
            if label != "":
                answers[str(task["data"]["daic_id"])] = label
        return answers
