"""The files of an image folder (`data=image_folder`): which image belongs to which class and
split. Torch- and Pillow-free, so the early checks list a folder before anything heavy loads.

A folder holds one subfolder per class (`DIR/<class>/*.png`), or `train/`, `val/` and `test/`
folders that each hold the class subfolders (`val/` and `test/` may be left out: they are
then cut from `train/`). Images may sit deeper inside a class folder; files of other types
and hidden files are left out.
"""

from __future__ import annotations

from pathlib import Path

from trainlab.errors import TrainlabError, listing

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLITS = ("train", "val", "test")
LAYOUT = "one subfolder per class (DIR/<class>/*.png), or train/ (and val/, test/) holding them"


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def class_folders(folder: Path, key: str) -> list[Path]:
    """The class subfolders of `folder`, sorted by name; refused when there are none."""
    folders = sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p))
    if not folders:
        images = [p.name for p in folder.iterdir() if p.name.lower().endswith(IMAGE_SUFFIXES)]
        found = f" (it holds {len(images)} image file(s) directly)" if images else ""
        raise TrainlabError(
            f"{key}={folder} has no class subfolders{found}; it needs {LAYOUT}, e.g. "
            f"{folder}/cat/1.png and {folder}/dog/2.png"
        )
    return folders


def images_in(folder: Path, key: str) -> list[Path]:
    """The image files under one class folder, sorted; refused when there are none."""
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES) and _visible(p)
    )
    if not files:
        raise TrainlabError(
            f"{key}: the class folder {folder} holds no images (.png, .jpg, .jpeg); "
            "add images or remove the folder"
        )
    return files


def list_image_folder(
    path: str | Path, key: str = "data.path"
) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    """The class names and, for each split found on disk, its `(file, class index)` pairs.

    The keys of the second result are the splits present: `train` always, `val` and `test`
    when the folder has them (a folder without `train/` is all `train`).
    """
    root = Path(path)
    if not root.exists():
        raise TrainlabError(
            f"{key}={path}: folder not found (looked in {root.resolve()}); point it at a "
            f"folder with {LAYOUT}"
        )
    if not root.is_dir():
        raise TrainlabError(f"{key}={path} is a file, not a folder; it needs {LAYOUT}")
    entries = [p for p in root.iterdir() if _visible(p)]
    if not entries:
        raise TrainlabError(f"{key}={path} is an empty folder; it needs {LAYOUT}")
    names = {p.name for p in entries if p.is_dir()}
    if not names & set(SPLITS):
        folders = class_folders(root, key)
        classes = [f.name for f in folders]
        files = [(file, c) for c, folder in enumerate(folders) for file in images_in(folder, key)]
        return classes, {"train": files}
    if "train" not in names:
        raise TrainlabError(
            f"{key}={path} has {' and '.join(sorted(names & set(SPLITS)))}/ but no train/; add "
            "train/ with one subfolder per class"
        )
    if others := sorted(names - set(SPLITS)):
        raise TrainlabError(
            f"{key}={path} mixes split folders (train/, val/, test/) with other folders "
            f"({listing(others, 5)}); move the class folders into train/"
        )
    classes = [f.name for f in class_folders(root / "train", key)]
    splits: dict[str, list[tuple[Path, int]]] = {}
    for split in SPLITS:
        if split not in names:
            continue
        folders = class_folders(root / split, key)
        if unknown := [f.name for f in folders if f.name not in classes]:
            raise TrainlabError(
                f"{key}: {root / split} has class folder(s) {listing(unknown, 5)} that train/ "
                f"lacks (train/ has: {listing(classes, 10)}); every class needs training images"
            )
        splits[split] = [
            (file, classes.index(folder.name))
            for folder in folders
            for file in images_in(folder, key)
        ]
    return classes, splits
