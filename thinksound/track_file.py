"""An audio track on disk, written and read a chunk at a time, so no stage holds a whole long track.

The file is a plain ``.npy`` of a (channels, samples) float32 array stored in Fortran order: its bytes
are interleaved samples, as in a WAV file, so a span of time is one contiguous read, and ``np.load``
still returns the same (channels, samples) array. Tracks saved by ``np.save`` (C order) read too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

DTYPE = np.dtype("<f4")


class TrackWriter:
    """Writes (channels, n) chunks, in order, into a track of a length fixed up front."""

    def __init__(self, path: Path, *, channels: int, length: int) -> None:
        self.path, self.channels, self.length = Path(path), channels, length
        self.written = 0
        self._file: BinaryIO = self.path.open("wb")
        header = {"descr": DTYPE.str, "fortran_order": True, "shape": (channels, length)}
        np.lib.format.write_array_header_1_0(self._file, header)

    def write(self, chunk: np.ndarray) -> None:
        if chunk.ndim != 2 or chunk.shape[0] != self.channels:
            raise ValueError(f"expected ({self.channels}, n) audio, got {chunk.shape=}")
        if self.written + chunk.shape[1] > self.length:
            raise ValueError(f"track of {self.length} samples overflows at {self.written + chunk.shape[1]}")
        self._file.write(np.ascontiguousarray(chunk.T, dtype=DTYPE).tobytes())
        self.written += chunk.shape[1]

    def close(self) -> None:
        self._file.close()
        if self.written != self.length:
            raise ValueError(f"track closed after {self.written} of {self.length} samples")

    def __enter__(self) -> TrackWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self._file.close()


class TrackFile:
    """Read access to a track file: spans of samples, or `track[:, a:b]` as with an array."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with self.path.open("rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, self._interleaved, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, self._interleaved, dtype = np.lib.format.read_array_header_2_0(handle)
            self._offset = handle.tell()
        if len(shape) != 2 or dtype != DTYPE:
            raise ValueError(f"{path} is not a (channels, samples) float32 track file: {shape}, {dtype}")
        self.channels, self.length = shape

    @property
    def shape(self) -> tuple[int, int]:
        return (self.channels, self.length)

    @property
    def size(self) -> int:
        return self.channels * self.length

    def read(self, start: int, stop: int) -> np.ndarray:
        """(channels, stop - start) float32 samples, clipped to the track."""
        start, stop = max(0, start), min(self.length, stop)
        count = max(0, stop - start)
        with self.path.open("rb") as handle:
            if self._interleaved:
                handle.seek(self._offset + start * self.channels * DTYPE.itemsize)
                return np.fromfile(handle, dtype=DTYPE, count=count * self.channels).reshape(count, -1).T
            # A C-order file (np.save of a (channels, samples) array) holds one channel after another.
            out = np.empty((self.channels, count), dtype=DTYPE)
            for channel in range(self.channels):
                handle.seek(self._offset + (channel * self.length + start) * DTYPE.itemsize)
                out[channel] = np.fromfile(handle, dtype=DTYPE, count=count)
            return out

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        channels, span = key
        if channels != slice(None) or not isinstance(span, slice) or span.step not in (None, 1):
            raise TypeError("a track file is read as track[:, start:stop]")
        start, stop, _ = span.indices(self.length)
        return self.read(start, stop)

    def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """(start, (channels, n) samples) of consecutive chunks of `size` samples."""
        for start in range(0, self.length, size):
            yield start, self.read(start, start + size)
