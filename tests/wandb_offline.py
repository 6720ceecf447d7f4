"""Read an offline W&B run (run-<id>.wandb) back with wandb's own record definitions.

wandb 0.31 no longer ships a Python reader (wandb.sdk.internal.datastore went with the move
to wandb-core); the file is still the LevelDB-style log that `wandb sync` replays: a 7-byte
header (":W&B", magic 0xBEE1, version 0), then 32 KiB blocks of records, each with a 7-byte
header (CRC-32 of type byte + data, length, type FULL/FIRST/MIDDLE/LAST), a record never
crossing a block, and each complete payload one `wandb.proto.wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

HEADER = struct.Struct("<4sHB")
RECORD_HEADER = struct.Struct("<IHB")
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str | Path):
    """Every Record of a .wandb file, in the order written; a corrupt file fails with its offset."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert HEADER.unpack_from(data) == (b":W&B", 0xBEE1, 0), f"{path}: not a W&B transaction log"
    pos, parts = HEADER.size, []
    while pos + RECORD_HEADER.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < RECORD_HEADER.size:  # the writer pads a block's tail that cannot hold a header
            pos += left
            continue
        crc, length, kind = RECORD_HEADER.unpack_from(data, pos)
        if kind == 0 and length == 0:  # zero padding at the end of a block
            pos += left
            continue
        chunk = data[pos + RECORD_HEADER.size:pos + RECORD_HEADER.size + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == crc, f"{path}: bad checksum at byte {pos}"
        pos += RECORD_HEADER.size + length
        parts.append(chunk)
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(b"".join(parts))
            parts = []
            yield record


def _items(items) -> dict:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


@dataclass
class OfflineRun:
    run_id: str = ""
    project: str = ""
    config: dict = field(default_factory=dict)  # wandb.init's config, then every config update
    history: list[dict] = field(default_factory=list)  # one dict per wandb.log / Lightning log step
    summary: dict = field(default_factory=dict)  # the final summary (updates applied in order)
    exit_code: int | None = None


def read_offline_run(run_dir: str | Path) -> OfflineRun:
    """One offline-run-<time>-<id> folder: its config, history rows, summary and exit code."""
    (path,) = Path(run_dir).glob("run-*.wandb")
    run = OfflineRun()
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id, run.project = record.run.run_id, record.run.project
            run.config.update(_items(record.run.config.update))
        elif kind == "config":
            run.config.update(_items(record.config.update))
        elif kind == "history":
            run.history.append(_items(record.history.item))
        elif kind == "summary":
            run.summary.update(_items(record.summary.update))
            for item in record.summary.remove:
                run.summary.pop(item.key, None)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run
