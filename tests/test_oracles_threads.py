"""daic.oracles.threads: the one-thread limiter covers the OpenMP runtime even when it is built
before anything imported scikit-learn (a fresh interpreter, as in a sidecar's first fit)."""
from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json
from daic.oracles import threads
with threads.single_thread():
    from threadpoolctl import threadpool_info
    seen = [(i["internal_api"], i["num_threads"]) for i in threadpool_info()]
print(json.dumps(seen))
"""


def test_the_limiter_built_first_still_limits_openmp_and_blas():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    apis = {api for api, _ in seen}
    assert "openmp" in apis and "openblas" in apis, seen
    assert all(n == 1 for _, n in seen), seen
