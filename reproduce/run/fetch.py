"""Put the files a dataset's paper-scale runs read into the Hugging Face cache: `python -m reproduce fetch squad`.

SQuAD: rajpurkar/squad's two parquet files and stanfordnlp/glove's glove.6B.zip (862 MB), at the
revisions pinned in lightning_modules/squad/hub_files.py, each checked by size and hash once.
The cache is HF_HOME's (or --cache-dir). On a cluster whose compute nodes have no network, run
it on a login node with the HF_HOME the compute nodes see; the runs there, with
HF_HUB_OFFLINE=1, find everything in the cache. Files already fetched and checked are skipped.
"""

from __future__ import annotations

import sys

from lightning_modules.errors import UserError
from lightning_modules.hub_data import PinnedFile, cached, download, hub_cache, verified
from lightning_modules.squad.hub_files import FETCH_COMMAND, GLOVE_REVISION, SQUAD_REVISION, glove_zip, squad_files

DATASETS = ("squad",)


def pinned_files(dataset: str, squad_revision: str = SQUAD_REVISION,
                 glove_revision: str = GLOVE_REVISION) -> list[PinnedFile]:
    if dataset != "squad":
        raise UserError(f"fetch: unknown dataset {dataset!r}; it fetches {', '.join(DATASETS)}")
    return [*squad_files(squad_revision).values(), glove_zip(glove_revision)]


def require_fetched(dataset: str, cache_dir: str | None = None) -> None:
    """Every pinned file of the dataset is in the cache and checked; else the UserError naming the
    fetch command (a profile checks this before it starts any run)."""
    for spec in pinned_files(dataset):
        verified(cached(spec, cache_dir), spec)


def fetch(dataset: str, cache_dir: str | None = None, squad_revision: str = SQUAD_REVISION,
          glove_revision: str = GLOVE_REVISION, check_only: bool = False) -> None:
    for spec in pinned_files(dataset, squad_revision, glove_revision):
        try:
            path = cached(spec, cache_dir)
        except UserError:
            if check_only:
                raise
            print(f"fetching {spec.label}", file=sys.stderr)
            path = download(spec, cache_dir)
        else:
            verified(path, spec)
        print(f"ok  {spec.label}: {path}", file=sys.stderr)
    print(f"{dataset}: every file is in the Hugging Face cache {hub_cache(cache_dir)} and checked; runs with "
          "HF_HUB_OFFLINE=1 and this HF_HOME find them there", file=sys.stderr)


def add_arguments(parser) -> None:
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument("--cache-dir", default=None,
                        help="the Hugging Face Hub cache (default: HF_HUB_CACHE, i.e. $HF_HOME/hub); runs given "
                             "another one need --data.hub_cache_dir too")
    parser.add_argument("--squad-revision", default=SQUAD_REVISION,
                        help="commit of rajpurkar/squad (the runs' data.hub_revision)")
    parser.add_argument("--glove-revision", default=GLOVE_REVISION,
                        help="commit of stanfordnlp/glove (the runs' data.glove_revision)")
    parser.add_argument("--check", action="store_true",
                        help=f"only check that everything is cached and intact; never download ({FETCH_COMMAND} "
                             "without it fetches what is missing)")


def run(args) -> None:
    fetch(args.dataset, args.cache_dir, args.squad_revision, args.glove_revision, check_only=args.check)
