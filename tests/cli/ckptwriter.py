"""Writes training checkpoints the way training tools do: file by file, chunk by chunk.

HF Trainer layout: model weights (safetensors, optionally sharded with an index),
optimizer.pt / scheduler.pt / rng_state.pth / training_args.bin (torch.save zip archives),
config.json, and trainer_state.json last.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from pathlib import Path

import numpy as np
from safetensors.numpy import save as st_save


def torch_zip(payload: bytes, name: str = "archive") -> bytes:
    """A zip laid out like torch.save's (stored entries: data.pkl, data/0, version)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{name}/data.pkl", b"\x80\x02}q\x00.")
        z.writestr(f"{name}/byteorder", b"little")
        z.writestr(f"{name}/data/0", payload)
        z.writestr(f"{name}/version", b"3\n")
    return buf.getvalue()


def hf_files(step: int, model_bytes: int = 1 << 20, shards: int = 1, seed: int = 0) -> dict[str, bytes]:
    """The files of an HF `checkpoint-<step>` dir, in write order (trainer_state.json last)."""
    rng = np.random.default_rng(seed * 100_003 + step)
    files: dict[str, bytes] = {}
    per_shard = max(1, model_bytes // 4 // shards)
    if shards == 1:
        files["model.safetensors"] = st_save(
            {"w": rng.standard_normal(per_shard, dtype=np.float32), "b": np.arange(16, dtype=np.int64)},
            metadata={"format": "pt"},
        )
    else:
        weight_map = {}
        for i in range(shards):
            fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            files[fname] = st_save({f"layer{i}.w": rng.standard_normal(per_shard, dtype=np.float32)})
            weight_map[f"layer{i}.w"] = fname
        files["model.safetensors.index.json"] = json.dumps(
            {"metadata": {"total_size": per_shard * 4 * shards}, "weight_map": weight_map}
        ).encode()
    files["config.json"] = json.dumps({"model_type": "toy", "hidden_size": 16}).encode()
    files["optimizer.pt"] = torch_zip(rng.bytes(max(1024, model_bytes // 2)))
    files["scheduler.pt"] = torch_zip(b"scheduler-state")
    files["rng_state.pth"] = torch_zip(rng.bytes(2048))
    files["training_args.bin"] = torch_zip(b"training-args")
    files["trainer_state.json"] = json.dumps(
        {"global_step": step, "log_history": [{"loss": 1.0 / (1 + step), "step": step}]}, indent=2
    ).encode()
    return files


def write_slowly(path: Path, data: bytes, chunk: int = 256 << 10, delay: float = 0.0):
    """Writes `data` to `path` in chunks, flushing and sleeping `delay` after each."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for i in range(0, len(data), chunk):
            f.write(data[i : i + chunk])
            f.flush()
            if delay:
                time.sleep(delay)


def write_checkpoint(root: Path, name: str, files: dict[str, bytes], chunk: int = 256 << 10,
                     delay: float = 0.0, file_delay: float = 0.0) -> Path:
    """Writes a checkpoint directory file by file (in dict order)."""
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        write_slowly(d / rel, data, chunk, delay)
        if file_delay:
            time.sleep(file_delay)
    return d


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree_digests(d: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `d`."""
    return {
        p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(d.rglob("*"))
        if p.is_file()
    }
