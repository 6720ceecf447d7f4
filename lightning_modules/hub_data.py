"""Files of Hugging Face Hub repos at a pinned commit: fetched once into the Hub cache, checked once, read offline.

Training runs never download. They find a pinned file in the Hub cache (`HF_HOME`, or a `cache_dir`
given as an argument) with `hf_hub_download(..., local_files_only=True)`, and a missing file, or a
revision the cache does not hold, is one UserError naming the command that fetches it
(`python -m reproduce fetch squad`, which calls `download`). That command is meant for a login node
of a cluster; the compute nodes then run with `HF_HUB_OFFLINE=1`.

`hf_hub_download` does not check content. `verified` does, once per file: the size and a hash
(the one the pin names, or else the Hub's own LFS object id, which is the sha256 the cache names
the blob by). A file that passed gets a small `<blob>.verified` record beside it (size, mtime and
hash), so later runs do not re-hash 862 MB; a file whose size or mtime changed since is hashed again.
A file that fails is never recorded, and nothing is derived from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from .atomic import atomic_write_json
from .errors import UserError

LFS_OID = re.compile(r"^[0-9a-f]{64}$")
VERIFIED_SUFFIX = ".verified"
HASH_CHUNK = 1 << 22


@dataclass(frozen=True)
class PinnedFile:
    repo_id: str
    repo_type: str  # "dataset" or "model", as hf_hub_download takes it
    filename: str
    revision: str  # a commit of the repo
    option: str  # the run's option that overrides the revision, named in the errors
    fetch_command: str  # what fetches it, named in the errors
    fetch_option: str  # the fetch command's option for the revision
    size: int | None = None  # None: not known beyond the Hub's LFS object id
    digest: tuple[str, str] | None = None  # (hashlib algorithm, hex); None: the LFS object id (sha256)

    @property
    def label(self) -> str:
        return f"{self.repo_id}/{self.filename} at revision {self.revision[:12]}"

    def at(self, revision: str) -> PinnedFile:
        """The same file at another revision: its size and hash are only known for the pinned one."""
        return self if revision == self.revision else replace(self, revision=revision, size=None, digest=None)


def hub_cache(cache_dir: str | Path | None) -> Path:
    """The cache folder hf_hub_download uses for `cache_dir` (None: HF_HUB_CACHE, from HF_HOME)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _repo_folder(spec: PinnedFile, cache_dir: str | Path | None) -> Path:
    return hub_cache(cache_dir) / f"{spec.repo_type}s--{spec.repo_id.replace('/', '--')}"


def cached(spec: PinnedFile, cache_dir: str | Path | None = None) -> Path:
    """The file's path in the Hub cache, never touching the network; a UserError naming the fetch
    command if it is not there."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(spec.repo_id, spec.filename, repo_type=spec.repo_type, revision=spec.revision,
                                    cache_dir=None if cache_dir is None else str(cache_dir), local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    repo = _repo_folder(spec, cache_dir)
    snapshots = sorted(p.name for p in (repo / "snapshots").glob("*")) if (repo / "snapshots").is_dir() else []
    if snapshots and spec.revision not in snapshots:
        raise UserError(f"revision {spec.revision} of {spec.repo_id} is not in the Hugging Face cache {repo} (it "
                        f"holds {', '.join(s[:12] for s in snapshots)}); fetch it on a machine with a network: "
                        f"{spec.fetch_command} {spec.fetch_option}={spec.revision}, or set {spec.option} to a "
                        "cached one")
    raise UserError(f"{spec.label} is not in the Hugging Face cache {hub_cache(cache_dir)}; fetch it on a machine "
                    f"with a network: {spec.fetch_command} (then runs find it there, HF_HUB_OFFLINE=1 included)")


def download(spec: PinnedFile, cache_dir: str | Path | None = None) -> Path:
    """Download into the Hub cache (huggingface_hub's progress bar on stderr), then check it."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        path = hf_hub_download(spec.repo_id, spec.filename, repo_type=spec.repo_type, revision=spec.revision,
                               cache_dir=None if cache_dir is None else str(cache_dir))
    except RevisionNotFoundError:
        raise UserError(f"revision {spec.revision} does not resolve in the Hub repo {spec.repo_id}; give a commit of "
                        f"https://huggingface.co/{spec.repo_type}s/{spec.repo_id} as {spec.fetch_option} here and "
                        f"{spec.option} in the runs") from None
    except RepositoryNotFoundError:
        raise UserError(f"the Hub repo {spec.repo_id} ({spec.repo_type}) is not found or not public") from None
    except LocalEntryNotFoundError as e:  # no network, or HF_HUB_OFFLINE=1 (an EntryNotFoundError too)
        raise UserError(f"cannot download {spec.label}: the Hub is not reachable from here "
                        f"({str(e).splitlines()[0]}); run {spec.fetch_command} on a machine with a network, "
                        "with HF_HOME pointing at a folder these runs share") from None
    except EntryNotFoundError:
        raise UserError(f"{spec.repo_id} has no file {spec.filename} at revision {spec.revision}; give a commit that "
                        f"has it as {spec.fetch_option} here and {spec.option} in the runs") from None
    return verified(Path(path), spec)


def blob_entry(path: Path) -> Path:
    """The repo's `blobs/<etag>` entry that a snapshot file links to (a plain file: itself).

    One link only: the entry may itself link on into the cache-wide store of Xet files, which
    names its files by their Xet hash, not by the sha256 the etag is."""
    if not path.is_symlink():
        return path
    return Path(os.path.normpath(path.parent / os.readlink(path)))


def _record_path(blob: Path) -> Path:
    return blob.with_name(blob.name + VERIFIED_SUFFIX)


def _expected(blob: Path, spec: PinnedFile) -> tuple[str, str] | None:
    if spec.digest is not None:
        return spec.digest
    return ("sha256", blob.name) if LFS_OID.match(blob.name) else None


def file_digest(path: Path, algorithm: str, progress: str | None = None) -> str:
    h = hashlib.new(algorithm)
    size, done, shown = path.stat().st_size, 0, -1
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
            done += len(chunk)
            percent = 100 * done // max(size, 1)
            if progress and size > 50 * HASH_CHUNK and percent // 10 != shown:
                shown = percent // 10
                print(f"\rchecking {progress}: {percent}%", end="", file=sys.stderr, flush=True)
    if progress and shown >= 0:
        print(file=sys.stderr)
    return h.hexdigest()


def verified(path: Path, spec: PinnedFile, shown_as: str | None = None) -> Path:
    """`path` (a file of the Hub cache, or a user's own copy of the same file) after its size and
    hash check; a UserError if it fails. A file with nothing to check against is returned as is."""
    blob = blob_entry(Path(path))
    expected = _expected(blob, spec)
    stat = blob.stat()
    record = _record_path(blob)
    mark = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "digest": list(expected) if expected else None}
    try:
        if json.loads(record.read_text()) == mark:
            return path
    except (OSError, ValueError):
        pass
    name = shown_as or spec.label
    fix = (f"delete {blob} and fetch it again ({spec.fetch_command})" if shown_as is None
           else f"restore {path} from a clean copy")
    if spec.size is not None and stat.st_size != spec.size:
        raise UserError(f"{name}: {path} has {stat.st_size:,} bytes, not {spec.size:,}: it fails its size and "
                        f"checksum check (truncated or corrupted); {fix}")
    if expected is None:
        return path
    algorithm, want = expected
    got = file_digest(blob, algorithm, progress=name)
    if got != want:
        raise UserError(f"{name}: {path} fails its {algorithm} checksum (expected {want[:16]}..., got {got[:16]}...): "
                        f"the file is corrupted; {fix}")
    try:
        atomic_write_json(record, mark)
    except OSError:  # a read-only copy: checked again next time, which is only slower
        pass
    return path
