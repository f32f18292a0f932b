"""Fine-tuning (``--init-from``): exact copies at step 0, a fresh D with its warm-up, class maps, FreezeD, resume,
and one-line errors for bad sources and maps."""

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import latest_weights, loss_lines
from safetensors.torch import load_file

from scalegan import load
from scalegan.cli import main
from scalegan.models.biggan import Discriminator
from scalegan.registry import model_config
from scalegan.training import train
from scalegan.training.config import TrainConfig
from scalegan.training.distributed import init_distributed
from scalegan.training.finetune import parse_class_map
from scalegan.training.loop import Run
from scalegan.weights import save_generator

TINY = dict(ch=8, d_ch=8, z_dim=16, shared_dim=16)


def make_npz(path, classes=(0, 1, 2)):
    """A 32x32 grayscale dataset: source class k is a bright bar at a k-dependent place; ``classes`` picks which
    source classes the file holds, relabelled 0..len-1."""
    rng = np.random.default_rng(0)
    y = np.arange(96) % len(classes)
    x = rng.integers(0, 40, size=(96, 32, 32, 1), dtype=np.uint8)
    for i, k in enumerate(y):
        top = 4 + 8 * classes[k]
        x[i, top:top + 6, 4:28] = 220
    np.savez(path, x=x, y=y.astype(np.int64))
    return path


def config(npz, out, **kw):
    base = dict(data=f"npz:{npz}", out_dir=str(out), iterations=2, batch_size=8, ema_start=1, log_every=1,
                sample_every=0, ckpt_every=0, progress=False, tensorboard=False, model_overrides=dict(TINY),
                objective={"n_d_steps": 1})
    return TrainConfig.from_preset("biggan-fmnist", **{**base, **kw})


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny 3-class run (2 iterations) and its data."""
    root = tmp_path_factory.mktemp("finetune")
    npz = make_npz(root / "three.npz")
    train(config(npz, root / "source", seed=1))
    return root / "source", npz


def start(cfg) -> Run:
    """The run as it stands before its first step."""
    return Run(cfg, *init_distributed(cfg.device))


def parameter_names(module) -> set[str]:
    return {name for name, _ in module.named_parameters()}


def test_init_from_a_run_copies_g_g_ema_and_d_exactly(source, tmp_path):
    run_dir, npz = source
    run = start(config(npz, tmp_path / "ft", init_from=str(run_dir), seed=5))
    for name, module in run.modules.items():
        expected = latest_weights(run_dir, name)
        got = module.state_dict()
        assert got.keys() == expected.keys()
        assert all(torch.equal(got[k], expected[k]) for k in got), name
    record = json.loads((tmp_path / "ft" / "train_config.json").read_text())["init_from"]
    ckpt = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()
    assert record["sha256"]["D"] == hashlib.sha256((ckpt / "D.safetensors").read_bytes()).hexdigest()
    assert record["kind"] == "run" and record["started_from"] == {"G": "G", "D": "D", "G_ema": "G_ema"}
    assert record["d_warmup"] == 0 and run.d_warmup == 0


def test_weights_folder_gives_a_fresh_d_that_warms_up_alone(source, tmp_path):
    run_dir, npz = source
    G, info = load(run_dir)
    weights = save_generator(G, tmp_path / "weights")
    assert start(config(npz, tmp_path / "default", init_from=str(weights))).d_warmup == 200  # the default
    fresh_D = Discriminator(model_config("biggan-fmnist", n_classes=3, **TINY))
    out = tmp_path / "ft"
    cfg = config(npz, out, init_from=str(weights), d_warmup=2, iterations=2)
    run = start(cfg)
    assert not torch.equal(run.D.embed.weight, latest_weights(run_dir, "D")["embed.weight"])
    assert run.D.state_dict().keys() == fresh_D.state_dict().keys()
    shutil.rmtree(out)
    train(cfg)
    source_g = load_file(weights / "model.safetensors")
    trained_g = latest_weights(out, "G")
    assert all(torch.equal(trained_g[k], source_g[k]) for k in parameter_names(G))  # G frozen in the warm-up
    d0 = run.D.state_dict()
    trained_d = latest_weights(out, "D")
    assert any(not torch.equal(trained_d[k], d0[k]) for k in parameter_names(run.D))  # D trained
    assert all("loss_g" not in line for line in loss_lines(out)) and all("loss_d_real" in x for x in loss_lines(out))
    record = json.loads((out / "train_config.json").read_text())["init_from"]
    assert record["kind"] == "weights" and record["started_from"]["D"] is None


def test_class_map_copies_rows_and_reinit_does_not(source, tmp_path):
    run_dir, _ = source
    two = make_npz(tmp_path / "two.npz", classes=(2, 0))
    src_g, src_d = latest_weights(run_dir, "G"), latest_weights(run_dir, "D")
    mapped = start(config(two, tmp_path / "mapped", init_from=str(run_dir), class_map="0:2,1:0"))
    assert mapped.G.shared.weight.shape[0] == 2
    assert torch.equal(mapped.G.shared.weight[0], src_g["shared.weight"][2])
    assert torch.equal(mapped.G.shared.weight[1], src_g["shared.weight"][0])
    assert torch.equal(mapped.D.embed.weight[1], src_d["embed.weight"][0])
    assert torch.equal(mapped.G.linear.weight, src_g["linear.weight"])  # the rest copied as it is
    fresh = start(config(two, tmp_path / "reinit", init_from=str(run_dir), class_map="reinit"))
    for row in fresh.G.shared.weight:
        assert not any(torch.equal(row, old) for old in src_g["shared.weight"])
    assert torch.equal(fresh.D.linear.weight, src_d["linear.weight"])
    partial = start(config(two, tmp_path / "partial", init_from=str(run_dir), class_map="1:1"))
    assert torch.equal(partial.G.shared.weight[1], src_g["shared.weight"][1])
    assert not torch.equal(partial.G.shared.weight[0], src_g["shared.weight"][0])
    default = start(config(two, tmp_path / "default", init_from=str(run_dir)))  # another count: re-initialised
    assert torch.equal(default.G.shared.weight, fresh.G.shared.weight)


def test_freeze_d_keeps_the_first_blocks_bit_identical(source, tmp_path):
    run_dir, npz = source
    out = tmp_path / "ft"
    train(config(npz, out, init_from=str(run_dir), freeze_d=1, iterations=3))
    before, after = latest_weights(run_dir, "D"), latest_weights(out, "D")
    names = parameter_names(Discriminator(model_config("biggan-fmnist", n_classes=3, **TINY)))
    first = sorted(k for k in names if k.startswith("blocks.0."))
    second = sorted(k for k in names if k.startswith("blocks.1."))
    assert first and second
    assert all(torch.equal(after[k], before[k]) for k in first)
    assert any(not torch.equal(after[k], before[k]) for k in second)


def test_resume_of_a_fine_tune_does_not_initialise_again(source, tmp_path):
    run_dir, npz = source
    copy = tmp_path / "source"
    shutil.copytree(run_dir, copy)
    out = tmp_path / "ft"
    train(config(npz, out, init_from=str(copy), iterations=2))
    record = json.loads((out / "train_config.json").read_text())["init_from"]
    shutil.rmtree(copy)  # a resumed run needs its own checkpoint only
    summary = train(config(npz, out, init_from=str(copy), iterations=3, resume=True))
    assert summary["step"] == 3
    assert json.loads((out / "train_config.json").read_text())["init_from"] == record


@pytest.mark.parametrize("extra, hint", [
    (["--init-from", "{tmp}/missing"], "no such file or folder"),
    (["--init-from", "{src}", "--class-map", "0:99"], "source class 99 is out of range"),
    (["--init-from", "{src}", "--class-map", "0-1"], "expected NEW:OLD pairs"),
    (["--init-from", "{src}", "--freeze-d", "9"], "the discriminator has 4 blocks"),
    (["--class-map", "0:1"], "need init_from"),
    (["--init-from", "{src}", "--model", "biggan-64", "--set", "z_dim=20"], "choose a --model of 32 px"),
    (["--init-from", "{src}", "--set", "ch=16"], "ch=8 (model: 16)"),
    (["--init-from", "{src}", "--model", "stylegan2-fmnist"], "cannot start a stylegan2 model"),
])
def test_bad_input_is_one_error_line(source, tmp_path, capsys, extra, hint):
    run_dir, npz = source
    argv = ["train", "--data", f"npz:{npz}", "--out-dir", str(tmp_path / "ft"), "--iterations", "1",
            "--no-progress", "--no-tensorboard"]
    sets = [] if "stylegan2-fmnist" in extra else [f"--set={k}={v}" for k, v in TINY.items()]
    argv += sets + [x.format(tmp=tmp_path, src=run_dir) for x in extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()  # the run's first line (precision, layout), then the error
    errors = [line for line in err if "error" in line or "Traceback" in line]
    assert errors == err[-1:] and err[-1].startswith("scalegan train: error:") and hint in err[-1], err
    assert not (tmp_path / "ft" / "checkpoints").exists()


def test_parse_class_map():
    assert parse_class_map("0:3, 1:5,2:7") == [(0, 3), (1, 5), (2, 7)]
    assert parse_class_map("reinit") == "reinit" and parse_class_map(None) is None
    with pytest.raises(ValueError, match="given twice"):
        parse_class_map("0:1,0:2")


def test_stylegan2_class_map_maps_the_embedding_columns(tmp_path):
    from conftest import tiny_overrides

    from scalegan.api import create_model

    overrides = {**tiny_overrides("stylegan2-fmnist"), "n_classes": 3}
    torch.manual_seed(3)
    G = create_model("stylegan2-fmnist", **overrides)[0]
    weights = save_generator(G, tmp_path / "weights")
    two = make_npz(tmp_path / "two.npz", classes=(2, 0))
    overrides.pop("n_classes")
    cfg = TrainConfig.from_preset("stylegan2-fmnist", data=f"npz:{two}", out_dir=str(tmp_path / "ft"), iterations=1,
                                  batch_size=4, progress=False, tensorboard=False, model_overrides=overrides,
                                  init_from=str(weights), class_map="0:2,1:0")
    run = start(cfg)
    embed, source = run.G.mapping.embed.weight, G.mapping.embed.weight  # [w_dim, n_classes]: a column per class
    assert embed.shape[1] == 2
    assert torch.equal(embed[:, 0], source[:, 2]) and torch.equal(embed[:, 1], source[:, 0])
    assert torch.equal(run.G.mapping.w_avg_class[0], G.mapping.w_avg_class[2])
    assert run.d_warmup == 200


def test_freeze_d_with_a_fresh_discriminator_is_refused(source, tmp_path):
    run_dir, npz = source
    G, _ = load(run_dir)
    weights = save_generator(G, tmp_path / "weights")
    with pytest.raises(ValueError, match="holds no discriminator.*drop --freeze-d"):
        train(config(npz, tmp_path / "ft", init_from=str(weights), freeze_d=1))
    with pytest.raises(ValueError, match="without --init-from, D starts from random weights"):
        config(npz, tmp_path / "scratch", freeze_d=1).validate()


def test_fine_tuning_takes_stylegan2_adas_resume_settings_unless_given(source):
    run_dir, npz = source
    tuned = config(npz, "out", init_from=str(run_dir))
    assert tuned.augment.ada_kimg == 100 and tuned.ema.rampup == 0
    given = config(npz, "out", init_from=str(run_dir), ada_kimg=300.0, ema_rampup=0.05)
    assert given.augment.ada_kimg == 300 and given.ema.rampup == 0.05
    scratch = config(npz, "out")
    assert scratch.augment.ada_kimg == 500 and scratch.ema.rampup == TrainConfig.from_preset("biggan-fmnist").ema.rampup


def test_init_from_a_network_pickle_loads_g_g_ema_and_d(tmp_path):
    from conftest import tiny_overrides
    from test_convert_stylegan2_pkl import write_network_pickle

    from scalegan.api import create_model

    overrides = {**tiny_overrides("stylegan2-fmnist"), "n_classes": 3}
    torch.manual_seed(5)
    G, D = create_model("stylegan2-fmnist", **overrides)
    G_ema, _ = create_model("stylegan2-fmnist", **overrides)
    for net in (G, D, G_ema):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p) * 0.1)  # trained-looking, and G differs from G_ema
    write_network_pickle(tmp_path / "network-snapshot.pkl", G, D, G_ema)
    npz = make_npz(tmp_path / "three.npz")
    overrides.pop("n_classes")
    cfg = TrainConfig.from_preset("stylegan2-fmnist", data=f"npz:{npz}", out_dir=str(tmp_path / "ft"), iterations=1,
                                  batch_size=4, progress=False, tensorboard=False, model_overrides=overrides,
                                  init_from=str(tmp_path / "network-snapshot.pkl"), freeze_d=1)
    run = start(cfg)
    assert run.init_record["started_from"] == {"G": "G", "D": "D", "G_ema": "G_ema"} and run.d_warmup == 0
    for ours, theirs in ((run.G, G), (run.D, D), (run.G_ema, G_ema)):
        mine = ours.state_dict()
        for key, value in theirs.state_dict().items():
            if key != "mapping.w_avg_class":  # not in NVlabs' files: the converter fills in its average W
                assert torch.equal(mine[key], value), key
    frozen = {id(p) for p in run.D.b32.parameters()}
    trained = {id(p) for group in run.optimizers["D"].param_groups for p in group["params"]}
    assert frozen and not frozen & trained


def test_init_from_a_stylegan_xl_pickle_tunes_its_generator_with_a_fresh_d(tmp_path):
    """StyleGAN-XL's projected D has no scalegan form: its G and G_ema are fine-tuned with the family's own D."""
    import dataclasses

    pytest.importorskip("dill")
    from test_convert_styleganxl_pkl import tiny_config as xl_config
    from test_convert_styleganxl_pkl import trained_like, write_xl_pickle

    cfg = dataclasses.replace(xl_config(32, True), img_channels=1)
    G, G_ema = trained_like(cfg)
    write_xl_pickle(tmp_path / "best_model.pkl", G, G_ema, tmp_path / "ran")
    npz = make_npz(tmp_path / "three.npz")
    overrides = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    overrides.update(d_channel_base=256, d_channel_max=16, d_mapping_layers=2, mbstd_group=2)
    train_cfg = TrainConfig.from_preset(
        "stylegan-xl-fmnist", data=f"npz:{npz}", out_dir=str(tmp_path / "ft"), iterations=2, batch_size=4,
        progress=False, tensorboard=False, sample_every=0, ckpt_every=0, model_overrides=overrides,
        init_from=str(tmp_path / "best_model.pkl"), d_warmup=1)
    run = start(train_cfg)
    assert run.init_record["started_from"] == {"G": "G", "D": None, "G_ema": "G_ema"} and run.d_warmup == 1
    for ours, theirs in ((run.G, G), (run.G_ema, G_ema)):
        mine = ours.state_dict()
        assert all(torch.equal(mine[k], v) for k, v in theirs.state_dict().items())
    summary = train(train_cfg)  # one D-only warm-up iteration, then one of both
    assert summary["step"] == 2
    tuned = latest_weights(tmp_path / "ft", "G")
    assert any(not torch.equal(tuned[k], v) for k, v in G.state_dict().items() if k in tuned)
