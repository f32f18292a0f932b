"""TrainConfig in sections: nested in train_config.json, taken by flat keys (the flags, older files), each section
validating itself."""

import dataclasses
import json

import pytest

from scalegan.training.config import FLAT_KEYS, SECTIONS, EMAConfig, OptimConfig, TrainConfig


def test_sections_nest_and_flat_keys_route():
    cfg = TrainConfig(lr_g=1e-3, ema=False, augment="translation", eval_every=5, freeze_d=1, max_rollbacks=7)
    assert cfg.optim.lr_g == 1e-3 and cfg.ema.enabled is False and cfg.augment.policy == "translation"
    assert cfg.eval.every == 5 and cfg.finetune.freeze_d == 1 and cfg.guard.max_rollbacks == 7
    data = json.loads(json.dumps(cfg.to_dict()))  # as train_config.json holds it
    assert data["optim"]["lr_g"] == 1e-3 and data["ema"]["enabled"] is False and "lr_g" not in data
    assert TrainConfig.from_dict(data) == cfg
    flat = cfg.flat()
    assert flat["lr_g"] == 1e-3 and flat["ema"] is False and flat["augment"] == "translation"
    assert TrainConfig.from_dict(flat) == cfg  # a file written before sections existed
    assert TrainConfig(optim=OptimConfig(lr_g=1e-3), ema=EMAConfig(enabled=False)).optim.lr_g == 1e-3
    assert dataclasses.replace(cfg, iterations=3).optim == cfg.optim
    # every section setting has one flat key, and no flat key is also a run field
    assert len(FLAT_KEYS) == sum(len(dataclasses.fields(c)) for c in SECTIONS.values())
    with pytest.raises(TypeError, match="unknown setting 'lr'"):
        TrainConfig(lr=1)


@pytest.mark.parametrize(("flat", "message"), [
    ({"lr_g": 0.0}, "lr_g must be > 0"),
    ({"ema_decay": 1.0}, "ema_decay must be in"),
    ({"ada_p": 2.0}, "ada_p in"),
    ({"eval_every": 10, "eval_metrics": "fdi"}, "unknown metric"),
    ({"class_map": "0:1"}, "need init_from"),
    ({"on_divergence": "panic"}, "on_divergence must be"),
])
def test_each_section_validates_itself(flat, message):
    cfg = TrainConfig(**flat)
    section = next(getattr(cfg, s) for s in SECTIONS if FLAT_KEYS[next(iter(flat))][0] == s)
    with pytest.raises(ValueError, match=message):
        section.validate()
    with pytest.raises(ValueError, match=message):
        cfg.validate()


def test_type_errors_name_the_flat_key():
    with pytest.raises(ValueError, match="training config field ema must be bool, got 'yes'"):
        TrainConfig.from_dict({"ema": "yes"})
    with pytest.raises(ValueError, match="training config field lr_g must be a finite float"):
        TrainConfig.from_dict({"optim": {"lr_g": "fast"}})
