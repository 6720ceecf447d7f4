"""Train one configuration: `python -m reproduce.train --config reproduce/configs/<name>.yaml`.

Every option can be overridden on the command line (`--model.reg_lambda=2e-6`,
`--trainer.max_epochs=3`, `--run_dir=...`), which is how W&B sweep agents drive it.
At the end it validates and tests the final weights, exports the pruned model to
`<run_dir>/export/` and writes `<run_dir>/result.json` (atomically, last).
Started again on an unfinished run dir, it resumes exactly from the newest readable checkpoint
(reproduce/run/training_run.py has what this shares with the SQuAD entry point).
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from pathlib import Path

from lightning_modules.atomic import atomic_write_json
from lightning_modules.errors import UserError
from lightning_modules.run_dir import EXPORT_DIR, RESULT_FILE
from lightning_modules.timing import hardware_summary

from .training_run import (
    build_run_cli,
    fit_resumable,
    git_commit,
    log_result_to_wandb,
    merge_metrics_parts,
    quiet_known_warnings,
    result_header,
    run_main,
)


def build_cli(args: list[str] | None, callbacks: tuple = ()):
    from lightning_modules.lm.lm_task import LanguageModelTask
    from lightning_modules.lm.ptb_data import PTBDataModule

    return build_run_cli(LanguageModelTask, PTBDataModule, args, "ptb",
                         links=(("data.vocab_size", "model.vocab_size"),), callbacks=callbacks)


def train(args: list[str] | None = None, callbacks: tuple = (), extra_result: dict | None = None) -> dict:
    """One run; `callbacks` join the trainer's and `extra_result` the result (the packed trainer's)."""
    started = time.time()
    commit = git_commit()  # the code this invocation runs, not what HEAD is when it ends
    quiet_known_warnings()
    # PTB resumes mid-epoch exactly (LanguageModelTask and PTBDataModule restore the position);
    # SQuAD's shuffled loader does not, and there Lightning's warning stays
    warnings.filterwarnings("ignore", message=r".*resuming from a checkpoint that ended before the epoch ended")
    cli = build_cli(args, callbacks)
    trainer = cli.trainer
    if trainer.world_size > 1:  # each process would read the whole stream: not one run with the same batch
        raise UserError(f"the language model trains in one process, not {trainer.world_size} (--trainer.devices / "
                        "--trainer.num_nodes); set --trainer.devices=1 and run several configs side by side instead")
    run_dir = fit_resumable(cli)
    return finish_run(cli, run_dir, args=args, commit=commit, started=started, epochs=cli.trainer.current_epoch,
                      extra_result=extra_result)


def finish_run(cli, run_dir: Path, *, args: list[str] | None, commit: str | None, started: float, epochs: int,
               extra_result: dict | None = None) -> dict:
    """The end of a trained run: validate and test the final weights, export, write result.json.
    Shared by a run alone and the batched trainer's members (reproduce/run/train_batched.py)."""
    cfg, trainer, model, data = cli.config, cli.trainer, cli.model, cli.datamodule
    val = trainer.validate(model, datamodule=data, verbose=False)[0]
    test = trainer.test(model, datamodule=data, verbose=False)[0]
    trainer.loggers[0].save()  # flush the CSV before merging
    merge_metrics_parts(run_dir)
    for name, value in (("val_ppl", val["val_ppl"]), ("test_ppl", test["test_ppl"])):
        if not math.isfinite(float(value)):
            raise UserError(f"training diverged: {name} is {float(value)}; no result is written. Lower model.lr "
                            "(or the penalty) and train again in a new --run_dir")

    from lightning_modules.lm.export import export_language_model

    export_dir = run_dir / EXPORT_DIR
    size = model.size_report()
    hp = model.hparams
    extra = {"method": hp.method, "reg_lambda": hp.reg_lambda}
    # direct design: the dense model it stands in for is the source run's original (for `speed`)
    total = json.loads(Path(hp.sizes_from).read_text()).get("neurons_total") if hp.sizes_from else None
    if total:
        extra["original_sizes"] = {"embedding_dim": total["input"][0], "hidden_sizes": total["hidden"]}
    export_language_model(model.model.cpu(), data.vocab, export_dir, extra=extra)
    result = {
        **result_header(cfg, hp, commit, "ptb", "reproduce.train", args),
        "metrics": {"val_ppl": float(val["val_ppl"]), "test_ppl": float(test["test_ppl"])},
        "epochs": epochs,
        "train_tokens": int(data.token_ids("train").numel()),
        **size,
        "speedup_flops": size["flops_per_token"]["before"] / size["flops_per_token"]["after"],
        "wall_time_s": {"train": round(model.train_wall_time_s, 1),
                        "this_invocation": round(time.time() - started, 1)},
        "hardware": hardware_summary(trainer.strategy.root_device.type),
        "export_path": EXPORT_DIR,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra_result or {}),
    }
    atomic_write_json(run_dir / RESULT_FILE, result)
    log_result_to_wandb(trainer, result, run_dir)
    print(f"finished: {run_dir}/{RESULT_FILE}: val_ppl {result['metrics']['val_ppl']:.2f}, "
          f"test_ppl {result['metrics']['test_ppl']:.2f}, hidden kept "
          f"{size['neurons_kept']['hidden']}", file=sys.stderr)
    return result


def main(args: list[str] | None = None) -> int:
    return run_main(train, args)


if __name__ == "__main__":
    sys.exit(main())
