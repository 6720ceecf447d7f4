"""Train BiDAF on SQuAD v1.1: `python -m reproduce.train_squad --config reproduce/configs/squad_<name>.yaml`.

The SQuAD counterpart of reproduce/run/train.py, with the same run dir and the same habits:
every option is overridable (`--model.reg_lambda=1e-7`, `--data.glove_path=...`), a run
resumes from its newest readable checkpoint, and a finished run (result.json) is refused
(reproduce/run/training_run.py has what the two entry points share).
At the end it evaluates the weight average on the evaluation set and writes, in the run dir:
  predictions.json   {question id: answer text}, the official format: score it with the
                     official v1.1 evaluator (`evaluate-v1.1.py dev-v1.1.json predictions.json`)
  export/            the pruned BiDAF as a smaller dense model (lightning_modules/squad/squad_export.py)
  result.json        EM, F1, neurons kept per LSTM and direction, sizes, FLOPs and the measured
                     batch-1 latency of the export against a dense BiDAF of the original sizes
                     (written atomically, last)
Several GPUs: `--trainer.devices=N --trainer.strategy=ddp` trains with the same global batch
(data.batch_size, split among the N processes); the first process writes the outputs.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

from lightning_modules.atomic import atomic_write_json
from lightning_modules.run_dir import EXPORT_DIR, PREDICTIONS_FILE, RESULT_FILE
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

SMOKE_NOTE = ("trained on dev articles and evaluated on other dev articles (no SQuAD train split): "
              "checks the pipeline; NOT comparable to SQuAD results")
RANDOM_VECTORS_NOTE = "RANDOM word vectors (data.word_vectors=random): NOT comparable with BiDAF's results (GloVe)"


def _squad_arguments(parser) -> None:
    parser.add_argument("--latency_questions", type=int, default=100,
                        help="evaluation questions timed at batch 1 after export (0: skip)")


def build_cli(args: list[str] | None):
    from lightning_modules.squad.squad_data import SquadDataModule
    from lightning_modules.squad.squad_task import SquadTask

    return build_run_cli(SquadTask, SquadDataModule, args, "squad",
                         links=(("data.word_vocab_size", "model.word_vocab_size"),
                                ("data.char_vocab_size", "model.char_vocab_size")),
                         extra_arguments=_squad_arguments, progress_every=50)


def measure_latency(model, data, export_dir: Path, questions: int) -> dict | None:
    """The export against a dense BiDAF of the original sizes, one question at a time."""
    if questions <= 0:
        return None
    import torch

    from lightning_modules.squad.bidaf import BiDAF
    from lightning_modules.squad.squad_data import collate_squad
    from lightning_modules.squad.squad_export import compare_latency, load_exported_bidaf

    pruned, config = load_exported_bidaf(export_dir)
    dims = {k: config[k] for k in ("word_dim", "char_dim", "char_channels", "char_kernel", "highway_layers")}
    # the weights do not change the time, so a freshly initialised dense model of the original sizes
    dense = BiDAF(len(config["word_vocab"]), len(config["char_vocab"]), **dims, dropout=0.0, gated=False,
                  hidden_sizes=config["original_hidden_sizes"])
    batches = [collate_squad([data.eval_set[i]]) for i in range(min(questions, len(data.eval_set)))]
    with torch.inference_mode():
        return compare_latency(pruned, dense, batches)


def train(args: list[str] | None = None) -> dict:
    started = time.time()
    commit = git_commit()
    quiet_known_warnings()
    # eval batches carry the question ids and contexts (lists) for decoding; Lightning cannot size them
    warnings.filterwarnings("ignore", message=r".*Trying to infer the `batch_size`")
    # DDP: the epoch-level values logged are already the same in every process (EM/F1 and the mean
    # loss synced by torchmetrics, the sizes computed from the synced weights)
    warnings.filterwarnings("ignore", message=r".*It is recommended to use `self.log\('.*', \.\.\., sync_dist=True\)`")
    cli = build_cli(args)
    cfg, trainer, model, data = cli.config, cli.trainer, cli.model, cli.datamodule
    run_dir = fit_resumable(cli)
    scores = trainer.validate(model, datamodule=data, verbose=False)[0]
    if not trainer.is_global_zero:  # DDP: the first process writes the run's outputs
        return {}
    trainer.loggers[0].save()
    merge_metrics_parts(run_dir)
    atomic_write_json(run_dir / PREDICTIONS_FILE, model.predictions)

    from lightning_modules.squad.squad_export import export_bidaf

    hp, dhp = model.hparams, data.hparams
    size = model.size_report()
    tokenisation = {"token_pattern": r"\w+|[^\w\s]", "lowercase_words": True,
                    "max_context_tokens": dhp.max_context_tokens, "max_question_tokens": dhp.max_question_tokens,
                    "max_word_chars": dhp.max_word_chars, "max_answer_tokens": hp.max_answer_tokens}
    export_bidaf(model.eval_model.cpu(), data.word_vocab, data.char_vocab, run_dir / EXPORT_DIR,
                 extra={"method": hp.method, "reg_lambda": hp.reg_lambda, **tokenisation})
    latency = measure_latency(model, data, run_dir / EXPORT_DIR, cfg["latency_questions"])
    result = {
        **result_header(cfg, hp, commit, "squad", "reproduce.train_squad", args),
        "metrics": {"em": float(scores["em"]), "f1": float(scores["f1"])},
        "evaluation": {
            "source": dhp.source,
            "questions": len(data.eval_set),
            "train_questions": len(data.train_set),
            "train_on_dev": data.train_on_dev,
            "note": "; ".join([SMOKE_NOTE if data.train_on_dev else "SQuAD v1.1 train split, evaluated on dev",
                               *([RANDOM_VECTORS_NOTE] if data.random_word_vectors else [])]),
            "random_word_vectors": data.random_word_vectors,
            **data.stats,
        },
        "word_vectors": model.word_vectors_note,
        "epochs": trainer.current_epoch,
        **size,
        "speedup_flops": size["flops_per_question"]["before"] / size["flops_per_question"]["after"],
        "latency_batch1": latency,
        "wall_time_s": {"train": round(model.train_wall_time_s, 1),
                        "this_invocation": round(time.time() - started, 1)},
        "hardware": hardware_summary(trainer.strategy.root_device.type),
        "export_path": EXPORT_DIR,
        "predictions_path": PREDICTIONS_FILE,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(run_dir / RESULT_FILE, result)
    log_result_to_wandb(trainer, result, run_dir)
    kept = dict(zip(size["neurons_kept"]["lstm_names"], size["neurons_kept"]["hidden"]))
    print(f"finished: {run_dir}/{RESULT_FILE}: EM {result['metrics']['em']:.2f}, F1 {result['metrics']['f1']:.2f} "
          f"on {len(data.eval_set)} questions, hidden kept {kept}", file=sys.stderr)
    if data.train_on_dev:
        print(f"NOTE: {SMOKE_NOTE}", file=sys.stderr)
    if data.random_word_vectors:
        print(f"NOTE: {RANDOM_VECTORS_NOTE}", file=sys.stderr)
    return result


def main(args: list[str] | None = None) -> int:
    return run_main(train, args)


if __name__ == "__main__":
    sys.exit(main())
