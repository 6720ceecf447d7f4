"""Each method trains as its reference implementation trains it: every PTB config of the small,
medium and large scales, parsed by the real command line (defaults included), against the recipe
its reference publishes (docs/REFERENCES.md names the sources), and the training loop's own
schedule, initialisation and gradient clip against that recipe. The short schedules for pruning a
trained model have no reference: they are checked against their own (their configs' headers).

References:
  TF PTB tutorial (ptb_word_lm.py, also in wenwei202/iss-rnns): Small/Medium/LargeConfig;
    lr = learning_rate * lr_decay ** max(epoch + 1 - max_epoch, 0) (epochs counted from 0);
    weights uniform(-init_scale, init_scale); tf.clip_by_global_norm over every trainable
    variable.
  iss-rnns `sparselarge` (ptb/README.md): keep 0.6, lr 1.0, x0.1 every 18 epochs, 55 epochs;
    ptb/run.sh fine-tunes a trained dense large model with keep 0.45; zero threshold
    max(1e-4, 2 * L1 scale) with an L1 scale of 0 in its group-Lasso config: 1e-4.
  Louizos et al. (AMLab-Amsterdam/L0_regularization): log_alpha clamped to [ln 0.01, ln 100].
"""

import math

import pytest
import torch
from conftest import REPO

from lightning_modules.pruning.optim import clipped_parameters
from reproduce.train import build_cli

CONFIGS = REPO / "reproduce" / "configs"

# TF tutorial configs: (init_scale, clip, num_steps, hidden, dropout = 1 - keep_prob, lr_decay,
# max_epoch (epochs at the full lr), max_max_epoch)
TF = {
    "small": dict(init_scale=0.1, max_grad_norm=5.0, num_steps=20, hidden=200, dropout=0.0, lr_decay=0.5,
                  lr_decay_start_epoch=4, max_epochs=13),
    "medium": dict(init_scale=0.05, max_grad_norm=5.0, num_steps=35, hidden=650, dropout=0.5, lr_decay=0.8,
                   lr_decay_start_epoch=6, max_epochs=39),
    "large": dict(init_scale=0.04, max_grad_norm=10.0, num_steps=35, hidden=1500, dropout=0.65,
                  lr_decay=1 / 1.15, lr_decay_start_epoch=14, max_epochs=55),
}
# iss-rnns: from scratch (ptb/README.md, sparselarge) and fine-tuning (ptb/run.sh: keep 0.45)
ISS_LARGE = {"ptb_large_group_lasso": dict(TF["large"], dropout=0.4, schedule="thirds"),
             "ptb_large_group_lasso_finetune": dict(TF["large"], dropout=0.55, schedule="thirds")}

# every config of the three scales and the recipe it follows; the direct design, magnitude pruning
# and L0 train with the dense model's recipe of their scale (the paper gives no other)
RECIPES = {
    **{f"ptb_{scale}_{kind}": dict(TF[scale], schedule="exponential")
       for scale, kinds in (("small", ("dense", "l0", "l0_finetune", "group_lasso", "group_lasso_finetune",
                                       "magnitude", "direct", "gru_dense", "gru_l0")),
                            ("medium", ("dense", "l0", "group_lasso", "magnitude", "direct")),
                            ("large", ("dense", "l0", "direct")))
       for kind in kinds},
    **ISS_LARGE,
    # pruning a trained model on the short schedule is this suite's own recipe (the configs' headers):
    # the small model, clip and init, 6 epochs with the weights at lr 0.1 and L0's gates at 1.0
    **{f"ptb_small_{kind}_finetune_short": dict(TF["small"], schedule="exponential", max_epochs=6, lr=0.1,
                                                gate_lr=1.0 if kind == "l0" else None)
       for kind in ("l0", "group_lasso")},
}


def test_every_scale_config_has_a_recipe():
    on_disk = {p.stem for p in CONFIGS.glob("ptb_*.yaml") if not p.stem.startswith("ptb_smoke")}
    assert on_disk == set(RECIPES)


def tf_lr(recipe: dict, epoch: int) -> float:
    """The TF tutorial's (or iss-rnns' sparselarge) learning rate of an epoch counted from 0."""
    if recipe["schedule"] == "thirds":
        return 0.1 ** (epoch // (recipe["max_epochs"] // 3))
    return recipe["lr_decay"] ** max(epoch + 1 - recipe["lr_decay_start_epoch"], 0)


def build(name: str, tmp_path, extra=()):
    args = ["--config", str(CONFIGS / f"{name}.yaml"), "--run_dir", str(tmp_path / name), "--wandb=disabled",
            "--trainer.accelerator=cpu"]
    text = (CONFIGS / f"{name}.yaml").read_text()
    if "sizes_from" in text or name.endswith("_direct"):
        args.append("--model.sizes_from=null")  # the direct design's sizes: its recipe is the dense one
    if "init_from" in text:
        args.append("--model.init_from=null")  # a finished dense run is not needed to read its recipe
    return build_cli([*args, *extra])


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_config_follows_its_reference_recipe(name, tmp_path):
    recipe = RECIPES[name]
    cli = build(name, tmp_path)
    hp, data, trainer = cli.model.hparams, cli.datamodule.hparams, cli.trainer
    assert trainer.max_epochs == recipe["max_epochs"]
    assert (data.batch_size, data.num_steps) == (20, recipe["num_steps"])
    if name == "ptb_medium_direct":  # sizes fixed in the config (its header says where from)
        assert max(hp.hidden_sizes) < recipe["hidden"] and hp.embedding_dim == recipe["hidden"]
    else:
        assert list(hp.hidden_sizes) == [recipe["hidden"]] * 2 and hp.embedding_dim == recipe["hidden"]
    assert hp.dropout == pytest.approx(recipe["dropout"])
    lr = recipe.get("lr", 1.0)
    assert (hp.lr, hp.max_grad_norm, hp.init_scale) == (lr, recipe["max_grad_norm"], recipe["init_scale"])
    assert hp.gate_lr == recipe.get("gate_lr")
    assert hp.lr_schedule == recipe["schedule"]

    # the learning rate the training loop sets, epoch by epoch, is the reference's
    model = cli.model
    model.trainer = trainer
    sched = model.configure_optimizers()["lr_scheduler"]["scheduler"]
    gates = {id(p) for p in model.model.gate_parameters()}
    gate_groups = [g for g in sched.optimizer.param_groups if any(id(p) in gates for p in g["params"])]
    lrs, gate_lrs = [], []
    for _ in range(recipe["max_epochs"]):
        lrs.append(sched.optimizer.param_groups[0]["lr"])
        gate_lrs.extend(g["lr"] for g in gate_groups)
        sched.step()
    factors = [tf_lr(recipe, e) for e in range(recipe["max_epochs"])]
    assert lrs == pytest.approx([lr * f for f in factors], rel=1e-12)
    if recipe.get("gate_lr") is not None:  # the gates on the same schedule from their own lr
        assert len(gate_groups) == 1
        assert gate_lrs == pytest.approx([recipe["gate_lr"] * f for f in factors], rel=1e-12)

    # weights uniform(-init_scale, init_scale), as the TF initializer (gates keep their own init)
    for p in model.model.weight_parameters():
        assert p.abs().max() <= recipe["init_scale"]
        if p.numel() > 10_000:
            assert p.abs().max() > 0.99 * recipe["init_scale"]
            assert p.std().item() == pytest.approx(recipe["init_scale"] / math.sqrt(3), rel=0.02)

    # tf.clip_by_global_norm over every trainable variable: weights and, under the default
    # gate_update, L0's log_alpha too (the unclipped gates shut neurons with no penalty)
    clipped = clipped_parameters(model.model.weight_parameters(), model.model.gate_parameters(), hp.gate_update)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {id(p) for p in clipped} == {id(p) for p in trainable}
    assert len(gates) == (4 if hp.method == "l0" else 0)  # input and hidden gates of both layers


@pytest.mark.parametrize("name", ["ptb_small_group_lasso", "ptb_large_group_lasso", "ptb_large_group_lasso_finetune"])
def test_iss_zero_threshold_is_iss_rnns(name, tmp_path):
    cli = build(name, tmp_path)
    pruning = cli.model.pruning
    assert pruning.threshold_for(cli.datamodule.hparams.num_steps) == 1e-4


def test_l0_gates_are_clamped_to_louizos_range(tmp_path):
    cli = build("ptb_small_l0", tmp_path)
    low, high = cli.model.hparams.log_alpha_range
    assert (low, high) == pytest.approx((math.log(0.01), math.log(100)))
    gate = cli.model.model.gate_parameters()[0]
    with torch.no_grad():
        gate.fill_(50.0)
    cli.model.pruning.after_optimizer_step(cli.model.model, 1, 20)
    assert gate.max().item() == pytest.approx(math.log(100))
