"""Class names: a labels file (one name per line) or a Hugging Face config.json's ``id2label``."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError


def read_labels_file(path) -> list[str]:
    """One class name per line, in class-index order (blank lines at the end are ignored).

    A line ``index name`` or ``index,name`` (an integer, then the name) is accepted too, as long as
    every line has one and the indices are 0..N-1.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read labels file {path} ({type(error).__name__}: {error})") from None
    while lines and not lines[-1].strip():
        lines.pop()
    names = [line.strip() for line in lines]
    if not names:
        raise ConfigError(f"labels file {path} is empty; write one class name per line")
    indexed = [_split_index(name) for name in names]
    if all(item is not None for item in indexed) and sorted(i for i, _ in indexed) == list(range(len(indexed))):
        return [name for _, name in sorted(indexed)]
    return [name.strip('"') for name in names]


def _split_index(line: str):
    for separator in (",", "\t", " "):
        head, sep, tail = line.partition(separator)
        if sep and head.strip().isdigit() and tail.strip():
            return int(head), tail.strip().strip('"')
    return None


def labels_from_hf_config(checkpoint) -> list[str] | None:
    """``id2label`` of a Hugging Face checkpoint folder (or a config.json path), in index order."""
    if checkpoint is None:
        return None
    path = Path(checkpoint)
    config = path / "config.json" if path.is_dir() else (path if path.name == "config.json" else None)
    if config is None or not config.is_file():
        return None
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return None
    id2label = data.get("id2label") if isinstance(data, dict) else None  # a config.json that is a list has no names
    if not isinstance(id2label, dict) or not id2label:
        return None
    try:
        items = sorted((int(k), str(v)) for k, v in id2label.items())
    except ValueError:
        return None
    if [k for k, _ in items] != list(range(len(items))):
        return None
    names = [v for _, v in items]
    # transformers writes LABEL_0, LABEL_1, ... when a model has no real names
    if all(name == f"LABEL_{i}" for i, name in enumerate(names)):
        return None
    return names


def resolve_labels(num_classes: int, *, labels_file=None, checkpoint=None) -> tuple[list[str], str]:
    """(names, source) for ``num_classes`` classes: the labels file, else the checkpoint's id2label,
    else ``class_<i>``.  A labels file with the wrong number of names is refused."""
    if labels_file is not None:
        names = read_labels_file(labels_file)
        if len(names) != num_classes:
            raise ConfigError(f"labels file {labels_file} has {len(names)} names but the model has {num_classes} classes")
        return names, str(labels_file)
    names = labels_from_hf_config(checkpoint)
    if names is not None and len(names) == num_classes:
        return names, f"{checkpoint} (id2label)"
    return [f"class_{i}" for i in range(num_classes)], "class indices"


def normalise_name(name: str) -> str:
    """For matching folder / list names to class names: 'Playing_Guitar' == 'playing guitar'."""
    return " ".join(str(name).strip().strip('"').replace("_", " ").lower().split())
