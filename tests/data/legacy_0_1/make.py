"""How these fixtures were made: run with scalegan 0.1.0 (commit d6fe045), before the family seam.

A run folder and two weights folders, with the images they gave. This is the 0.1.0 API (``G.set_truncation``,
``G.class_names``); it does not run against later versions, which only have to read what it wrote."""
import shutil
from pathlib import Path

import numpy as np
import torch

import scalegan
from scalegan.training import train
from scalegan.training.config import TrainConfig
from scalegan.weights import save_generator

out = Path("tests/data/legacy_0_1")
shutil.rmtree(out, ignore_errors=True)
out.mkdir(parents=True)
torch.set_num_threads(1)
# tiny dataset
rng = np.random.default_rng(0)
x = rng.integers(0, 255, size=(32, 32, 32, 1), dtype=np.uint8)
y = np.arange(32) % 3
np.savez("/tmp/legacy_data.npz", x=x, y=y.astype(np.int64))
cfg = TrainConfig.from_preset("biggan-fmnist", data="npz:/tmp/legacy_data.npz", out_dir=str(out / "run"),
    iterations=2, batch_size=4, model_overrides=dict(ch=4, d_ch=4, dim_z=8, shared_dim=8), lecam=0.1,
    sample_every=0, ckpt_every=0, tensorboard=False, progress=False, log_every=1, time_budget=0)
train(cfg)
shutil.rmtree(out / "run" / "samples")
# weights folders
torch.manual_seed(0)
G, _ = scalegan.create_model("biggan-deep-128", ch=4, d_ch=4, dim_z=8, shared_dim=8, n_classes=4, n_stats=3,
                             resolution=32, sn_eval="stored", rgb_channels=4)
with torch.no_grad():
    for m in G.modules():
        if hasattr(m, "stats_mean"):
            m.stats_mean.normal_(0, 0.1)
            m.stats_var.uniform_(0.5, 1.5)
G.class_names = ["a", "b", "c", "d"]
G.class_ids = []
G.set_truncation(1.0)
save_generator(G.eval(), out / "deep_weights", converted_from={"format": "pytorch-pretrained-biggan", "path": "x"})
torch.manual_seed(1)
G2, _ = scalegan.create_model("biggan-32", ch=4, d_ch=4, dim_z=8, n_classes=3)
G2.class_names = ["x", "y", "z"]
save_generator(G2.eval(), out / "biggan_weights")
# expected outputs
gen = torch.Generator().manual_seed(5)
z8 = torch.randn(4, 8, generator=gen)
yy = torch.tensor([0, 1, 2, 0])
run_G = scalegan.load(out / "run").eval()
exp = {"run": run_G(z8, yy).detach().numpy(),
       "biggan": scalegan.load(out / "biggan_weights")(z8, yy).detach().numpy()}
Gd = scalegan.load(out / "deep_weights")
for t in (1.0, 0.5):
    Gd.set_truncation(t)
    exp[f"deep_t{t}"] = Gd(z8, torch.tensor([0, 1, 2, 3])).detach().numpy()
np.savez_compressed(out / "expected.npz", z=z8.numpy(), **exp)
