"""Fit-level ablation of the retraining method (issue 16): ``daic.training.loop.fit`` directly (no Ray,
no pipeline, no sampling) from the cached champion of ``benchmarks/online_estimation.py``.

Labelled = ``--n-labels`` (140: the training share of a 200-label cycle) test images drifted like the
stream (mixture: 20 % left clean); unlabelled pool = 3,000 other test images drifted the same way;
drifted eval = 1,500 further test images, all corrupted; clean eval = the first 2,000 test images.
One JSON line per ``--cfg NAME=JSON`` (TrainConfig fields over the retrain defaults epochs=2, lr=1e-3,
oversample 10, batch 128); for the mixture also the accuracy per corruption (translate, contrast,
rotate, gaussian_noise). The whole-cycle figures are ``benchmarks/improvement.py``'s.

    .venv/bin/python benchmarks/improvement_ablation.py --scen mixture --base 55000 \
        --cfg 'labels={}' --cfg 'chain={"augment":"chain"}'
"""
import sys, time, json, argparse
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent)); sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np, torch
torch.set_num_threads(1)
from online_estimation import load_or_train
from daic.data.mnist import load_split
from daic.data.corruptions import corrupt
from daic.training.config import TrainConfig
from daic.training.loop import fit, WarmStart
from daic.models.weights import state_dict_to_bytes
from daic.models.inference import accuracy
from daic.demo.config import DEFAULT_MIXTURE as MIX
p = argparse.ArgumentParser()
p.add_argument('--scen', default='mixture'); p.add_argument('--n-labels', type=int, default=140)
p.add_argument('--base', type=int, default=5000); p.add_argument('--seed', type=int, default=0)
p.add_argument('--cfg', action='append', default=[])  # name=json
p.add_argument('--weighting', default='uniform', choices=('uniform', 'mispredicted'),
               help="per-label loss weights as collect-labels' train_weighting: mispredicted = 2 where the champion errs (mean 1)")
a = p.parse_args()
test = load_split('test'); train = load_split('train')
rng = np.random.default_rng(a.seed + 100)
perm = rng.permutation(10000)
lab_idx, ev_idx = perm[:a.n_labels], perm[5000:6500]
def drift(idx, seed, stream):
    x = test.images[idx]
    if a.scen == 'mixture':
        out = x.copy(); parts = np.array_split(np.arange(len(idx)), 4)
        for k, ((n, s), rows) in enumerate(zip(MIX, parts)):
            out[rows] = corrupt(x[rows], n, s, seed=seed + k)
        if stream:  # 20% clean in the stream
            clean = np.random.default_rng(seed).random(len(idx)) < 0.2
            out[clean] = x[clean]
        return out
    n, s = a.scen.split('/'); return corrupt(x, n, int(s), seed=seed)
lx, ly = drift(lab_idx, 7, True), test.labels[lab_idx]
from daic.training.semi_supervised import UnlabeledPool
pool = UnlabeledPool(drift(perm[1000:4000], 11, True))
ex, ey = drift(ev_idx, 1234, False), test.labels[ev_idx]
cx, cy = test.images[:2000], test.labels[:2000]
m, _ = load_or_train('small_cnn'); s, _ = load_or_train('shadow_net')
warm = WarmStart({'model': state_dict_to_bytes(m), 'shadow': state_dict_to_bytes(s)})
d0, c0 = accuracy(m, ex, ey), accuracy(m, cx, cy)
if a.scen == 'mixture': print('before parts', [round(accuracy(m, ex[r], ey[r]), 3) for r in np.array_split(np.arange(len(ey)), 4)], flush=True)
op_w = None
if a.weighting == 'mispredicted':
    from daic.models.inference import predict
    op_w = np.where(predict(m, lx).predictions != ly, 2.0, 1.0).astype(np.float32)
    op_w /= op_w.mean()
images = np.concatenate([train.images[:a.base], lx]).astype(np.float32); labels = np.concatenate([train.labels[:a.base], ly])
for spec in a.cfg:
    name, _, js = spec.partition('=')
    f = {"epochs": 2, "lr": 1e-3, "operational_oversample": 10, "seed": a.seed, "num_workers": 1, "batch_size": 128}
    f.update(json.loads(js or '{}'))
    cfg = TrainConfig(**f)
    t = time.time()
    last = {}
    r = fit(cfg, images, labels, n_base=a.base, device=torch.device('cpu'), warm=warm, unlabeled=pool if cfg.unlabeled_key else None,
            on_epoch=lambda metrics, nets: last.update(metrics), operational_weights=op_w)
    net = r.nets['model'].eval()
    d1, c1 = accuracy(net, ex, ey), accuracy(net, cx, cy)
    parts = [round(accuracy(net, ex[r], ey[r]), 3) for r in np.array_split(np.arange(len(ey)), 4)] if a.scen == 'mixture' else []
    print(json.dumps({"scen": a.scen, "cfg": name, "weighting": a.weighting, "base": a.base, "seed": a.seed, "d0": round(d0, 4), "d1": round(d1, 4),
                      "reg": round((d1 - d0) / (c0 - d0), 3), "c0": c0, "dclean": round(100 * (c1 - c0), 2), "s": round(time.time() - t), "parts": parts,
                      **{k: round(v, 3) for k, v in last.items() if k.startswith("select_")}}), flush=True)
