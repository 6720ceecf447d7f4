"""What every training entry point shares (reproduce/run/train.py for PTB, train_squad.py for SQuAD).

The command line (LightningCLI: a YAML config, every option overridable as --model.x=...),
the run dir with its loggers (CSV always, W&B offline or online), checkpoints (each epoch,
every N steps, on SIGTERM/SIGUSR1), resuming from the newest readable checkpoint, the float32
precision (--precision fp32|tf32, lightning_modules/precision.py), and the end of a run: result.json
(with the precision flags in force) in the W&B summary. Each entry point adds its model, data and result.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import netrc
import os
import subprocess
import sys
import warnings
from pathlib import Path

from lightning_modules.atomic import atomic_write_text
from lightning_modules.checkpointing import Preempted, pick_checkpoint
from lightning_modules.errors import UserError
from lightning_modules.precision import PRECISIONS, apply_precision, precision_flags
from lightning_modules.run_dir import (
    CHECKPOINT_DIR,
    EPOCH_CHECKPOINT,
    EXPORT_DIR,
    LAST_CHECKPOINT,
    METRICS_FILE,
    METRICS_PART_GLOB,
    RESULT_FILE,
    STEP_CHECKPOINT,
    WANDB_DIR,
    metrics_part_file,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def git_commit() -> str | None:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def wandb_mode(requested: str) -> str:
    """auto: WANDB_MODE if set, online if an API key is configured, else offline."""
    if requested != "auto":
        return requested
    env = os.environ.get("WANDB_MODE")
    if env:
        return {"dryrun": "offline", "run": "online"}.get(env, env)
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        pass
    return "offline"


def set_aside_metrics(run_dir: Path) -> None:
    """Lightning's CSV logger deletes an existing metrics.csv when it starts; on a resume
    keep it as metrics.part-N.csv, to be merged back by `merge_metrics_parts`."""
    current = run_dir / METRICS_FILE
    if current.exists():
        n = len(list(run_dir.glob(METRICS_PART_GLOB)))
        current.rename(run_dir / metrics_part_file(n))


def merge_metrics_parts(run_dir: Path) -> None:
    """One metrics.csv with every invocation's rows, oldest first (rows of an epoch that was
    interrupted and redone appear twice; readers keep the last row per step)."""
    parts = sorted(run_dir.glob(METRICS_PART_GLOB))
    if not parts:
        return
    rows, fields = [], []
    for f in [*parts, run_dir / METRICS_FILE]:
        if f.exists():
            with open(f, newline="") as fh:
                reader = csv.DictReader(fh)
                fields += [k for k in reader.fieldnames or [] if k not in fields]
                rows += list(reader)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(run_dir / METRICS_FILE, buffer.getvalue())
    for f in parts:
        f.unlink()


def default_run_dir(run_dir: str | None, dataset: str) -> str:
    """Under a W&B sweep agent every run needs its own dir; the agent names the run."""
    if run_dir:
        return run_dir
    sweep, run = os.environ.get("WANDB_SWEEP_ID"), os.environ.get("WANDB_RUN_ID")
    if sweep and run:
        return f"results/sweeps/{sweep}/{run}"
    return f"results/{dataset}/custom/run"


def log_result_to_wandb(trainer, result: dict, run_dir: Path) -> None:
    """The result in the W&B run summary (what `reproduce table --wandb` reads); online, also
    result.json and the export as an artifact."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if not isinstance(logger, WandbLogger):
            continue
        run = logger.experiment
        run.summary["result"] = result
        run.summary.update({**result["metrics"], "speedup_flops": result["speedup_flops"]})
        if not run.offline:
            import wandb

            artifact = wandb.Artifact(f"run-{run.id}", type="model", metadata={"method": result["method"],
                                                                             "lambda": result["lambda"]})
            artifact.add_file(str(run_dir / RESULT_FILE))
            artifact.add_dir(str(run_dir / result["export_path"]), name=EXPORT_DIR)
            run.log_artifact(artifact)
        run.finish()


def build_run_cli(task_cls, data_cls, args: list[str] | None, dataset: str,
                  links: tuple[tuple[str, str], ...] = (), extra_arguments=None, progress_every: int = 200,
                  callbacks: tuple = ()):
    """LightningCLI (run=False) for one training run; `links` tie data attributes to model arguments;
    `callbacks` join the trainer's (the packed trainer's turn taking)."""
    from lightning.pytorch.cli import LightningCLI

    class RunCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            parser.add_argument("--run_dir", type=str, default=None,
                                help=f"where checkpoints, logs, export and {RESULT_FILE} go (default: "
                                     "results/sweeps/<sweep id>/<run id> under a W&B sweep agent, "
                                     f"else results/{dataset}/custom/run)")
            parser.add_argument("--profile", type=str, default="custom",
                                help=f"profile name recorded in {RESULT_FILE} (smoke, small, paper)")
            parser.add_argument("--wandb", type=str, default="auto",
                                choices=["auto", "online", "offline", "disabled"],
                                help="W&B mode; auto = online if you are logged in, else offline")
            parser.add_argument("--wandb_project", type=str, default="neuron-selection-rnn")
            parser.add_argument("--precision", type=str, default="fp32", choices=list(PRECISIONS),
                                help="float32 matmuls and cuDNN kernels: fp32 (full float32) or tf32 (TensorFloat-32 "
                                     f"on a GPU that has it); {RESULT_FILE} records the flags in force")
            parser.add_argument("--ckpt_path", type=str, default=None,
                                help="checkpoint to resume from, or 'last' (default: the run "
                                     "dir's newest readable checkpoint if there is one)")
            parser.add_argument("--checkpoint_every_n_steps", type=int, default=500,
                                help=f"also checkpoint ({CHECKPOINT_DIR}/{STEP_CHECKPOINT}) every N training steps "
                                     "(0: only at epoch ends and on SIGTERM/SIGUSR1)")
            parser.add_argument("--checkpoint_every_epoch", type=bool, default=True,
                                help=f"{LAST_CHECKPOINT} and the two newest epoch checkpoints at every epoch end "
                                     f"(false: only {STEP_CHECKPOINT}, on a signal or every N steps; the GPU "
                                     "window's runs, whose checkpoints never come back)")
            for source, target in links:
                parser.link_arguments(source, target, apply_on="instantiate")
            if extra_arguments is not None:
                extra_arguments(parser)

        def instantiate_trainer(self, **kwargs):
            from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
            from lightning.pytorch.loggers import CSVLogger, WandbLogger

            from lightning_modules.checkpointing import ResumableCheckpoints

            cfg = self.config
            cfg["run_dir"] = default_run_dir(cfg["run_dir"], dataset)
            run_dir = Path(cfg["run_dir"])
            loggers = [CSVLogger(save_dir=str(run_dir), name="", version="")]
            mode = wandb_mode(cfg["wandb"])
            if mode != "disabled":
                # a sweep agent's run id, else a stable one, so a resumed run continues its W&B run
                run_id = os.environ.get("WANDB_RUN_ID") if os.environ.get("WANDB_SWEEP_ID") else None
                run_id = run_id or hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:12]
                (run_dir / WANDB_DIR).mkdir(parents=True, exist_ok=True)
                full_config = {**cfg.clone().as_dict(), "git_commit": git_commit()}
                full_config.pop("config", None)  # jsonargparse's Path objects; config_path is in result
                loggers.append(WandbLogger(project=cfg["wandb_project"], name=str(run_dir),
                                           save_dir=str(run_dir), id=run_id, config=full_config,
                                           offline=(mode == "offline"), resume="allow"))
            run_callbacks = [
                LearningRateMonitor(logging_interval="epoch"),
                ResumableCheckpoints(run_dir / CHECKPOINT_DIR, cfg["checkpoint_every_n_steps"]),
                *callbacks,
            ]
            if cfg["checkpoint_every_epoch"]:
                # every epoch: last.ckpt plus the two newest epoch checkpoints (a fallback)
                run_callbacks.insert(0, ModelCheckpoint(dirpath=str(run_dir / CHECKPOINT_DIR),
                                                        filename=EPOCH_CHECKPOINT, auto_insert_metric_name=False,
                                                        save_last=True, monitor="step", mode="max", save_top_k=2))
            if self.config_init["trainer"].get("enable_progress_bar") is not False:
                # in a log file (no terminal) a bar refreshed every batch floods it
                run_callbacks.append(TQDMProgressBar(refresh_rate=1 if sys.stderr.isatty() else progress_every))
            kwargs.update(default_root_dir=str(run_dir), logger=loggers,
                          callbacks=[*(self.config_init["trainer"].get("callbacks") or []), *run_callbacks])
            return super().instantiate_trainer(**kwargs)

    return RunCLI(task_cls, data_cls, run=False, args=args, seed_everything_default=1,
                  parser_kwargs={"exit_on_error": False}, save_config_kwargs={"overwrite": True},
                  auto_configure_optimizers=False)


def result_header(cfg, hparams, commit: str | None, dataset: str, entry_point: str, args: list[str] | None) -> dict:
    """The fields every result.json starts with: what was trained, from which code and command."""
    from lightning_modules.pruning.pruning_methods import method_properties

    config_files = [str(c) for c in (cfg.get("config") or [])]
    return {
        "method": hparams.method,
        "method_properties": method_properties(dict(hparams)),
        "lambda": hparams.reg_lambda,
        "model_hparams": dict(hparams),
        "seed": cfg["seed_everything"],
        "dataset": dataset,
        "profile": cfg["profile"],
        "git_commit": commit,
        "config_path": config_files[0] if len(config_files) == 1 else config_files,
        "command": " ".join([f"python -m {entry_point}", *(args if args is not None else sys.argv[1:])]),
        # read back at the end, so that it says what was in force, not what was asked for
        "precision": precision_flags(),
    }


def quiet_known_warnings() -> None:
    """Messages printed on every run that a user cannot act on."""
    # the seed goes into result.json; the INFO line would only clutter error output
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
    # a deprecation inside Lightning itself
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).? is deprecated")  # `...` quoted
    # the run dir is never empty; the old metrics.csv is set aside and merged back
    warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
    # a resumed run's checkpoint folder holds its earlier checkpoints, by design
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


def fit_resumable(cli) -> Path:
    """Fit in the precision of --precision, resuming from the run dir's newest readable checkpoint;
    returns the run dir.

    A finished run dir is refused. A SIGTERM/SIGUSR1 ends in `Preempted` after its checkpoint.
    """
    cfg, trainer = cli.config, cli.trainer
    run_dir = Path(cfg["run_dir"])
    if (run_dir / RESULT_FILE).exists():
        raise UserError(f"{run_dir} already holds a finished run ({RESULT_FILE}); "
                        "use another --run_dir or delete that folder to train again")
    if cfg["checkpoint_every_n_steps"] < 0:
        raise UserError(f"--checkpoint_every_n_steps must be >= 0, got {cfg['checkpoint_every_n_steps']}")
    apply_precision(cfg["precision"])  # before the first kernel: a captured step keeps the precision it saw
    ckpt = pick_checkpoint(run_dir / CHECKPOINT_DIR, cfg["ckpt_path"])
    if ckpt is not None:
        print(f"resuming from {ckpt}", file=sys.stderr)
        set_aside_metrics(run_dir)
    try:
        trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt)
    except Preempted as stop:
        trainer.loggers[0].save()  # the metrics so far; merged with the resumed run's at its end
        _mark_wandb_preempting(trainer, stop.signum)
        raise
    return run_dir


def _mark_wandb_preempting(trainer, signum: int) -> None:
    """Tell W&B the run was preempted: a sweep then hands the same run (same id, so the same run
    dir under an agent, with its checkpoints) to the next agent instead of counting it as failed.

    W&B requeues a run marked preempting only if the run ends with a non-zero exit code, and it
    takes that code from the run, not the process: `sys.exit(main())` looked up sys.exit before
    wandb hooked it, so the run would end as a success (0). Hence the explicit finish."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            if not logger.experiment.offline:
                logger.experiment.mark_preempting()
            logger.experiment.finish(exit_code=128 + signum)


def run_main(train_fn, args: list[str] | None) -> int:
    """Exit status: 0 done, 2 a user error (one line), 128 + signal after a preemption checkpoint."""
    from ..user_errors import report_user_errors

    try:
        return report_user_errors(lambda: train_fn(args),
                                  "run the same command again to resume from the last checkpoint")
    except Preempted as stop:
        # a clean stop, not a failure: the exit status says which signal, as a kill would
        print(f"{stop}; run the same command to resume", file=sys.stderr)
        return 128 + stop.signum
