"""Labelled clip lists for ``evaluate``: a ``path label`` file (K400 / SSv2 style) or a folder per class."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .decode import is_clip_path
from .labels import normalise_name


@dataclass(frozen=True)
class LabelledClip:
    key: str  # the path as written in the list (relative keys keep results files portable)
    path: Path  # where to read it
    label: int


@dataclass
class LabelledList:
    clips: list
    source: str
    class_names: list | None = None  # names for label indices, when the list defined them
    note: str = ""


def read_labelled_list(source, *, root=None, class_names=None) -> LabelledList:
    """Read ``source``: a text/CSV file of ``path label`` lines, or a folder with one sub-folder per class.

    * File: one clip per line, ``path label`` separated by a space, tab or comma (VideoMAE's
      ``val.csv``, mmaction2's ``kinetics400_val_list_videos.txt``).  The label is a class index,
      or a class name matched against ``class_names`` (case, ``_`` and spaces ignored).  Relative
      paths are read from ``root`` (default: the list file's folder).  ``#`` lines are comments.
    * Folder: every sub-folder is a class; its video files (or frame folders) are its clips.  With
      ``class_names`` the folder names are matched to them; without, classes are the sorted folder
      names (index = position), like torchvision's ImageFolder.
    """
    source = Path(source)
    if source.is_dir():
        return _read_folder(source, class_names)
    if not source.is_file():
        raise ConfigError(f"clip list {source} does not exist")
    return _read_file(source, Path(root) if root else source.parent, class_names)


def _name_index(class_names):
    return {normalise_name(name): i for i, name in enumerate(class_names)} if class_names else None


def _read_file(source: Path, root: Path, class_names) -> LabelledList:
    lookup = _name_index(class_names)
    rows = []  # (key, path, label index or class name)
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read clip list {source} ({type(error).__name__})") from None
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        path_text, label_text = _split(line)
        if path_text is None:
            raise ConfigError(f"{source}:{number}: expected 'path label', got {raw!r}")
        if not rows and label_text.lower() in ("label", "class", "category"):
            continue  # a CSV header
        if label_text.isdigit():
            label = int(label_text)
        elif lookup is not None:
            label = lookup.get(normalise_name(label_text))
            if label is None:
                raise ConfigError(f"{source}:{number}: class {label_text!r} is not one of the model's class names (check --labels)")
        else:
            label = normalise_name(label_text)
        path = Path(path_text)
        rows.append((path_text, path if path.is_absolute() else root / path, label))
    if not rows:
        raise ConfigError(f"clip list {source} has no clips")
    names = sorted({label for _, _, label in rows if isinstance(label, str)})
    if names and any(isinstance(label, int) for _, _, label in rows):
        raise ConfigError(f"clip list {source} mixes class indices and class names; use one or the other")
    if not names:
        return LabelledList([LabelledClip(*row) for row in rows], str(source), list(class_names) if class_names else None)
    # names without a class list: index by sorted name, as a folder dataset would
    order = {name: i for i, name in enumerate(names)}
    clips = [LabelledClip(key, path, order[label]) for key, path, label in rows]
    note = "class names in the list were mapped to indices in sorted order (pass --labels to use the model's order)"
    return LabelledList(clips, str(source), names, note)


def _split(line: str):
    for separator in ("\t", ",", " "):
        if separator in line:
            head, _, tail = line.rpartition(separator)
            if head.strip() and tail.strip():
                return head.strip().strip('"'), tail.strip().strip('"')
    return None, None


def _read_folder(source: Path, class_names) -> LabelledList:
    folders = sorted(p for p in source.iterdir() if p.is_dir())
    if not folders:
        raise ConfigError(f"{source} has no class sub-folders; pass a 'path label' list or a folder with one sub-folder per class")
    lookup = _name_index(class_names)
    note = ""
    if lookup is not None:
        labels = {}
        for folder in folders:
            index = lookup.get(normalise_name(folder.name))
            if index is None:
                raise ConfigError(f"class folder {folder.name!r} matches none of the model's class names (check --labels)")
            labels[folder] = index
        names = list(class_names)
    else:
        labels = {folder: i for i, folder in enumerate(folders)}
        names = [folder.name for folder in folders]
        note = "classes are the sorted folder names (index = position); pass --labels to match the model's class order"
    clips = []
    for folder in folders:
        for item in sorted(folder.iterdir()):
            if is_clip_path(item):
                clips.append(LabelledClip(str(item.relative_to(source)), item, labels[folder]))
    if not clips:
        raise ConfigError(f"no clips found in the class folders of {source}")
    return LabelledList(clips, str(source), names, note)
