"""Streaming a 4D series (X, Y, Z, T) from and to disk in chunks.

A step reads either a run of consecutive volumes (for what is done volume by volume:
motion, resampling, smoothing, parcel means) or a slab of consecutive z-planes with all
their volumes (for what is done voxel by voxel over time: slice timing, denoising), and
writes its result the same way. Its memory is then set by ``chunk_mb``, not by the run
length: a 1,200-volume run needs what a 600-volume run needs.

Work files are uncompressed float32 NIfTI: a slab is read with one seek per volume, which
a gzipped file cannot do (every seek decompresses from the start). A gzipped input is read
once, volume chunk after volume chunk, through one open handle.

Hand-written because nibabel reads an image or a slice of one but writes only whole images,
and nilearn's image functions hold the series in memory.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
from isal import igzip

#: default chunk size, MB of float32 data held by a step at once
CHUNK_MB = 256.0
FLOAT_BYTES = 4


def _chunk_length(bytes_per_item: int, n_items: int, chunk_mb: float) -> int:
    """How many items of ``bytes_per_item`` fit in ``chunk_mb`` (at least 1, at most ``n_items``)."""
    return int(min(max(1, chunk_mb * 2 ** 20 // bytes_per_item), max(n_items, 1)))


def volume_chunks(shape: tuple[int, ...], chunk_mb: float = CHUNK_MB, start: int = 0,
                  stop: int | None = None) -> list[slice]:
    """Runs of consecutive volumes of a (X, Y, Z, T) series, each at most ``chunk_mb`` of float32."""
    stop = shape[3] if stop is None else stop
    step = _chunk_length(FLOAT_BYTES * int(np.prod(shape[:3])), stop - start, chunk_mb)
    return [slice(t, min(t + step, stop)) for t in range(start, stop, step)]


def slab_chunks(shape: tuple[int, ...], chunk_mb: float = CHUNK_MB) -> list[slice]:
    """Runs of consecutive z-planes of a (X, Y, Z, T) series, each with all T volumes at most
    ``chunk_mb`` of float32."""
    step = _chunk_length(FLOAT_BYTES * shape[0] * shape[1] * shape[3], shape[2], chunk_mb)
    return [slice(z, min(z + step, shape[2])) for z in range(0, shape[2], step)]


@contextmanager
def opened(path: str | os.PathLike) -> Iterator[nib.spatialimages.SpatialImage]:
    """``path`` as nibabel loads it, its data read through one file handle kept open for the
    block, so that reading it in pieces decompresses a gzipped file once.

    A gzipped file is decompressed by ISA-L (python-isal's ``igzip``, the same bytes as
    zlib's at about three times the speed: 6 s against 21 s for the hcp profile's 600-volume
    BOLD); nibabel still parses the header and slices and scales the data.
    """
    if not str(path).endswith(".gz"):
        yield nib.load(path, keep_file_open=True)
        return
    kind = type(nib.load(path))  # the header alone: NIfTI-1 or NIfTI-2
    with igzip.open(path, "rb") as stream:
        yield kind.from_file_map({"image": nib.FileHolder(str(path), stream),
                                  "header": nib.FileHolder(str(path), stream)})


def iter_volumes(path: str | os.PathLike, chunk_mb: float = CHUNK_MB, start: int = 0,
                 stop: int | None = None) -> Iterator[tuple[slice, np.ndarray]]:
    """Volumes ``start:stop`` of a series file, chunk after chunk: (volume slice, (X, Y, Z, n) float32),
    through one open handle (:func:`opened`)."""
    with opened(path) as img:
        for chunk in volume_chunks(img.shape, chunk_mb, start, stop):
            yield chunk, np.asarray(img.dataobj[..., chunk], np.float32)


def read_slab(path: str | os.PathLike, planes: slice) -> np.ndarray:
    """(X, Y, dz, T) float32: z-planes ``planes`` of every volume of an uncompressed series."""
    if str(path).endswith(".gz"):
        raise ValueError(f"{path}: slabs are read from uncompressed series only")
    img = nib.load(path, mmap=False)
    return np.asarray(img.dataobj[:, :, planes, :], np.float32)


def uncompressed(path: str | os.PathLike, folder: str | os.PathLike, chunk_mb: float = CHUNK_MB) -> str:
    """``path`` itself when uncompressed; else a float32 ``.nii`` copy written in ``folder``
    (one decompression pass), so that slabs can be read from it."""
    if not str(path).endswith(".gz"):
        return str(path)
    img = nib.load(path)
    copy = Path(folder) / Path(path).name[:-3]
    with SeriesWriter(copy, img.shape, img.affine, tr=float(img.header.get_zooms()[3])) as writer:
        for chunk, data in iter_volumes(path, chunk_mb):
            writer.write_volumes(chunk, data)
    return str(copy)


def mean_volume(path: str | os.PathLike, chunk_mb: float = CHUNK_MB) -> np.ndarray:
    """(X, Y, Z) float64 temporal mean of a series, read chunk by chunk."""
    total = None
    n_volumes = 0
    for chunk, data in iter_volumes(path, chunk_mb):
        part = data.sum(axis=-1, dtype=np.float64)
        total = part if total is None else total + part
        n_volumes += chunk.stop - chunk.start
    return total / n_volumes


class SeriesWriter:
    """An uncompressed float32 NIfTI series written piece by piece (volumes or slabs).

    The header is written first and the file sized to hold every voxel; pieces are then
    written where they belong, so they may come in any order. Parts never written read as 0.

    Parameters
    ----------
    path : destination (``.nii``)
    shape : (X, Y, Z, T)
    affine : (4, 4) voxel → world (RAS mm)
    tr : repetition time, s, recorded in the header as ``save_image`` does
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int, int, int], affine: np.ndarray,
                 tr: float | None = None):
        if str(path).endswith(".gz"):
            raise ValueError(f"{path}: series are written uncompressed")
        self.path = Path(path)
        self.shape = tuple(int(n) for n in shape)
        header = nib.Nifti1Image(np.zeros((1, 1, 1, 1), np.float32), affine).header
        header.set_data_shape(self.shape)
        header.set_data_dtype(np.float32)
        if tr is not None:
            header.set_xyzt_units("mm", "sec")
            header["pixdim"][4] = tr
        header["vox_offset"] = self._offset = 352  # no extensions
        self._volume_bytes = FLOAT_BYTES * int(np.prod(self.shape[:3]))
        self._file = open(self.path, "w+b")
        header.write_to(self._file)
        self._file.write(b"\0" * (self._offset - self._file.tell()))
        self._file.truncate(self._offset + self._volume_bytes * self.shape[3])

    @classmethod
    def reopen(cls, path: str | os.PathLike) -> SeriesWriter:
        """A writer over an existing uncompressed float32 series, to replace parts of it in place."""
        img = nib.load(path)
        header = img.header
        if header.get_data_dtype() != np.float32 or str(path).endswith(".gz"):
            raise ValueError(f"{path}: only an uncompressed float32 series can be updated in place")
        writer = cls.__new__(cls)
        writer.path = Path(path)
        writer.shape = tuple(int(n) for n in header.get_data_shape())
        writer._offset = int(img.dataobj.offset)  # a loaded header's vox_offset is reset; the proxy keeps it
        writer._volume_bytes = FLOAT_BYTES * int(np.prod(writer.shape[:3]))
        writer._file = open(writer.path, "r+b")
        return writer

    def write_volumes(self, volumes: slice, data: np.ndarray) -> None:
        """Write (X, Y, Z, n) ``data`` as volumes ``volumes``."""
        self._file.seek(self._offset + volumes.start * self._volume_bytes)
        self._file.write(np.asfortranarray(data, np.float32).T)  # C-contiguous: its buffer is NIfTI's order

    def write_slab(self, planes: slice, data: np.ndarray) -> None:
        """Write (X, Y, dz, T) ``data`` as z-planes ``planes`` of every volume."""
        plane_bytes = FLOAT_BYTES * self.shape[0] * self.shape[1]
        blocks = np.ascontiguousarray(np.asarray(data, np.float32).transpose(3, 2, 1, 0))  # (T, dz, Y, X)
        for t in range(self.shape[3]):
            self._file.seek(self._offset + t * self._volume_bytes + planes.start * plane_bytes)
            self._file.write(blocks[t])

    def close(self) -> str:
        self._file.close()
        return str(self.path)

    def __enter__(self) -> SeriesWriter:
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()
