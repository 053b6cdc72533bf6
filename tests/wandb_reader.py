"""Reads an offline W&B run's `.wandb` log (wandb 0.31 ships no Python reader for it any more).

The file is a 7-byte header, then LevelDB-log-format records in 32 KiB blocks: each record has a
7-byte header (CRC32C, little-endian length, type full/first/middle/last) and its payload is part
of a `wandb_internal_pb2.Record` protobuf.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK, HEADER = 32 * 1024, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = Path(path).read_bytes()
    out, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:
            pos += left_in_block  # trailer padding
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        payload = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0
            continue
        if kind in (FULL, FIRST):
            pending = payload
        else:
            pending += payload
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
    return out


def history(path: Path) -> list[dict]:
    """One dict per logged step: {"_step": n, key: value, ...}."""
    rows = []
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            row = {"/".join(item.nested_key) or item.key: json.loads(item.value_json) for item in record.history.item}
            row["_step"] = record.history.step.num if record.history.HasField("step") else row.get("_step")
            rows.append(row)
    return rows


def run_ids(path: Path) -> set[str]:
    return {r.run.run_id for r in records(path) if r.WhichOneof("record_type") == "run"}


def config_keys(path: Path) -> set[str]:
    keys = set()
    for record in records(path):
        if record.WhichOneof("record_type") == "config":
            keys |= {item.key for item in record.config.update}
    return keys


def summary(path: Path) -> dict:
    values = {}
    for record in records(path):
        if record.WhichOneof("record_type") == "summary":
            values.update({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.summary.update})
    return values
