"""Atomic file writes: a crash mid-write never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _mode_for(path))  # mkstemp makes the file private (0600)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _mode_for(path: Path) -> int:
    """The permissions a replaced file keeps, or a new file's default under the umask."""
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` that writes atomically. The same object gives the same bytes: torch
    names the archive inside the file after a path it is given, so it is given an open
    file instead of the random temporary name."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    atomic_write_bytes(text.encode("utf-8"), path)


# Pillow's format for each image suffix fvis writes (one format per suffix, no guessing)
IMAGE_FORMATS = {
    ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF",
    ".tiff": "TIFF", ".webp": "WEBP", ".gif": "GIF",
}  # fmt: skip


def check_output(path: str | os.PathLike, suffixes=IMAGE_FORMATS) -> Path:
    """``path`` if a file of that name can be written there, refused otherwise, before any
    work: an unknown suffix (``ValueError`` listing the known ones), an existing folder
    (``IsADirectoryError``), a parent that is a file (``NotADirectoryError``) or a folder
    where no file can be created (``PermissionError``). Missing folders are fine (they
    are created when the file is written)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"output {path} is a folder; give a file name inside it")
    if not path.name or path.name in (".", ".."):
        raise ValueError(f"output path {str(path)!r} names no file")
    if path.suffix.lower() not in suffixes:
        what = f"suffix {path.suffix!r}" if path.suffix else "no suffix"
        raise ValueError(
            f"output {path} has {what}; the format follows the suffix: use one of "
            f"{', '.join(suffixes)}"
        )
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {parent} is a file, not a folder")
    try:  # a real probe: permission bits do not tell root about read-only file systems
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".fvis-probe-")
    except OSError as e:
        raise PermissionError(
            f"cannot write {path}: {parent} is not writable ({e.strerror})"
        ) from None
    os.close(fd)
    os.unlink(probe)
    return path


def check_output_folder(path: str | os.PathLike, what: str) -> Path:
    """``path`` as the folder ``what`` writes several files into, refused before any
    work when it is an existing file or a new name that looks like a file's
    (``out/x.png``: a folder of that name is surely not what was meant)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"-o {path} is a file; {what} writes a folder of files")
    suffix = path.suffix.lower()
    if not path.exists() and suffix in (*IMAGE_FORMATS, ".html", ".htm", ".md", ".json", ".npz"):
        folder = path.with_suffix("")
        raise ValueError(f"-o {path} looks like a file name; {what} writes several "
                         f"files into a folder: give one such as {folder}")  # fmt: skip
    return path


def inside(root: str | os.PathLike, *parts: str) -> Path:
    """``root / parts...``, refused (``ValueError``) when it would leave ``root`` (``..``,
    an absolute part, a link out): names from models and users never escape a folder."""
    root_path = Path(root).resolve()
    path = root_path.joinpath(*parts).resolve()
    if path != root_path and root_path not in path.parents:
        raise ValueError(f"{'/'.join(parts)!r} would be written outside {root}")
    return Path(root).joinpath(*parts)


def save_image(image, path: str | os.PathLike) -> None:
    """Save a PIL image atomically; the format follows the suffix of ``path``
    (:data:`IMAGE_FORMATS`; any other suffix is refused before writing)."""
    path = check_output(path)
    fmt = IMAGE_FORMATS[path.suffix.lower()]
    if fmt in ("JPEG", "BMP") and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt)
