"""TensorBoard summaries without TensorFlow: scalars per training step and PNG figures, written as TensorBoard
event files (through `tensorboardX`) next to each loop's metrics.jsonl, and read back by `read_events`.

    tensorboard --logdir runs/      # one TensorBoard run per teacher/ and student_<step>/ directory

A resumed loop opens its writer with `purge_step` = the step it resumes from, so TensorBoard drops the points
an interrupted invocation wrote after its last checkpoint (as `loop` truncates metrics.jsonl).
"""
from __future__ import annotations

import os
import struct
import uuid
from pathlib import Path
from typing import Iterable

import numpy as np

__all__ = ["ScalarWriter", "write_pngs", "read_events", "event_files"]


class ScalarWriter:
    """Scalars `tag -> value` at integer steps into an event file in `logdir` (created if needed)."""

    def __init__(self, logdir: str | os.PathLike, purge_step: int | None = None):
        from tensorboardX import SummaryWriter
        # a unique suffix: tensorboardX names files by the second, and a second writer would overwrite the first
        self._writer = SummaryWriter(os.fspath(logdir), purge_step=purge_step or None, flush_secs=30,
                                     filename_suffix=f".{os.getpid()}.{uuid.uuid4().hex[:8]}")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self._writer.add_scalar(tag, float(value), int(step))

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def _png_size(data: bytes) -> tuple[int, int]:
    """(height, width) from a PNG's IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    width, height = struct.unpack(">II", data[16:24])
    return height, width


def write_pngs(logdir: str | os.PathLike, paths: Iterable[str | os.PathLike], step: int) -> None:
    """Each PNG file as an image summary (tag: the file's stem) at `step`, its bytes stored as they are."""
    from tensorboardX import SummaryWriter
    from tensorboardX.proto.summary_pb2 import Summary
    paths = sorted(Path(p) for p in paths)
    if not paths:
        return
    writer = SummaryWriter(os.fspath(logdir), filename_suffix=f".{os.getpid()}.{uuid.uuid4().hex[:8]}.images")
    try:
        for path in paths:
            data = path.read_bytes()
            height, width = _png_size(data)
            image = Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=data)
            writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=path.stem, image=image)]), int(step))
    finally:
        writer.close()


def event_files(logdir: str | os.PathLike) -> list[Path]:
    """The event files directly in `logdir`, oldest first."""
    return sorted(Path(logdir).glob("events.out.tfevents.*"), key=lambda p: (p.stat().st_mtime_ns, p.name))


def _records(path: Path):
    """The records of a TFRecord file (length, crc, data, crc), checks skipped."""
    with open(path, "rb") as f:
        while header := f.read(12):
            if len(header) < 12:
                return
            (length,) = struct.unpack("<Q", header[:8])
            data = f.read(length)
            f.read(4)
            if len(data) < length:
                return
            yield data


def read_events(logdir: str | os.PathLike) -> dict:
    """{"scalars": {tag: (steps (n,), values (n,))}, "images": {tag: [(step, png bytes), ...]}} of the event
    files in `logdir`, in order, honouring purges as TensorBoard does (a SessionLog START at step s drops the
    points at steps >= s written before it)."""
    from tensorboardX.proto.event_pb2 import Event, SessionLog
    scalars: dict[str, list[tuple[int, float]]] = {}
    images: dict[str, list[tuple[int, bytes]]] = {}
    for path in event_files(logdir):
        for record in _records(path):
            event = Event.FromString(record)
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                for series in (*scalars.values(), *images.values()):
                    series[:] = [p for p in series if p[0] < event.step]
            if not event.HasField("summary"):
                continue
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
                elif value.HasField("image"):
                    images.setdefault(value.tag, []).append((event.step, value.image.encoded_image_string))
    return {"scalars": {t: (np.array([s for s, _ in v], int), np.array([x for _, x in v], np.float32))
                        for t, v in scalars.items()},
            "images": images}
