"""The paper's numbers as data (``tdsclip/paper.yaml``) and the matching of runs to them.

An entry is one row of the paper's Tables 1-2 or one cell of Tables 3-4: the experiment, the
overrides that make the cell, the protocol the paper measured it with and its top-1 (top-5).
A run matches an entry when its experiment is the entry's and, for every key that some entry
overrides (the ablation switches), its config holds the value the entry's composed config holds.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PROTOCOLS = ("test", "val")
DEFAULT_EXPERIMENT = "default"  # the built-in default job: no experiment config
_REQUIRED = ("id", "table", "row", "experiment", "overrides", "protocol", "top1")
_OPTIONAL = ("preset", "top5", "tflops")

# compose(overrides) -> the training config those command-line overrides give, as plain data.
Composer = Callable[[Sequence[str]], Mapping[str, Any]]


@dataclass(frozen=True)
class PaperEntry:
    """One number-bearing row or cell of the paper."""

    id: str
    table: str
    row: str
    experiment: str
    overrides: tuple[str, ...]
    protocol: str  # "test": multi-view test of best.pt; "val": best single-view validation
    top1: float
    top5: float | None = None
    preset: str | None = None  # configs/ablation/<preset>.yaml runs it
    tflops: float | None = None

    @property
    def label(self) -> str:
        return f"Tab. {self.table} {self.row}"

    def override_keys(self) -> list[str]:
        return [override_key(o) for o in self.overrides]

    def command(self) -> list[str]:
        """The training command's overrides: ``experiment=...`` and the entry's own."""
        if self.experiment == DEFAULT_EXPERIMENT:
            return list(self.overrides)
        return [f"experiment={self.experiment}", *self.overrides]


def override_key(override: str) -> str:
    """``model.side.dim`` of ``model.side.dim=128`` (also of ``+key=...`` and ``~key``)."""
    return override.split("=", 1)[0].lstrip("+~")


def default_paper_file() -> Path:
    """``paper.yaml`` as installed with the package."""
    return Path(str(importlib.resources.files("tdsclip") / "paper.yaml"))


def load_paper(path: str | Path | None = None) -> list[PaperEntry]:
    """The entries of ``path`` (default: the package's ``paper.yaml``), checked."""
    path = Path(path) if path is not None else default_paper_file()
    if not path.is_file():
        raise FileNotFoundError(f"paper file not found: {path}")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise ValueError(f"{path}: expected a mapping with a list under 'entries'")
    entries = [_entry(raw, path, i) for i, raw in enumerate(data["entries"])]
    ids = [e.id for e in entries]
    if dupes := sorted({i for i in ids if ids.count(i) > 1}):
        raise ValueError(f"{path}: duplicate entry ids {dupes}")
    return entries


def _entry(raw: Any, path: Path, index: int) -> PaperEntry:
    where = f"{path}: entry {index}"
    if not isinstance(raw, dict):
        raise ValueError(f"{where} is not a mapping")
    where += f" ({raw.get('id', '?')})"
    if missing := [k for k in _REQUIRED if k not in raw]:
        raise ValueError(f"{where} lacks {missing}")
    if unknown := sorted(set(raw) - set(_REQUIRED) - set(_OPTIONAL)):
        raise ValueError(f"{where} has unknown keys {unknown}")
    if raw["protocol"] not in PROTOCOLS:
        raise ValueError(f"{where}: protocol must be one of {PROTOCOLS}, got {raw['protocol']!r}")
    overrides = raw["overrides"] or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ValueError(f"{where}: overrides must be a list of 'key=value' strings")
    if bad := [o for o in overrides if "=" not in o]:
        raise ValueError(f"{where}: overrides without '=': {bad}")

    def number(key: str) -> float | None:
        value = raw.get(key)
        if value is not None and not isinstance(value, (int, float)):
            raise ValueError(f"{where}: {key} must be a number, got {value!r}")
        return None if value is None else float(value)

    return PaperEntry(
        id=str(raw["id"]),
        table=str(raw["table"]),
        row=str(raw["row"]),
        experiment=str(raw["experiment"]),
        overrides=tuple(overrides),
        protocol=raw["protocol"],
        top1=float(number("top1")),
        top5=number("top5"),
        preset=None if raw.get("preset") is None else str(raw["preset"]),
        tflops=number("tflops"),
    )


def select(config: Mapping[str, Any], key: str) -> Any:
    """``config["a"]["b"]`` for ``key="a.b"``; None where the path does not exist."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


class PaperMatcher:
    """Finds the paper entry a run reproduces.

    ``compose(entry.command())`` gives the config of an entry; each is composed once, and
    only when a run of its experiment asks.
    """

    def __init__(self, entries: Sequence[PaperEntry], compose: Composer) -> None:
        self.entries = list(entries)
        self.keys = sorted({k for e in self.entries for k in e.override_keys()})
        self._compose = compose
        self._values: dict[str, dict[str, Any]] = {}

    def values(self, entry: PaperEntry) -> dict[str, Any]:
        """The entry's value of every matched key."""
        if entry.id not in self._values:
            config = self._compose(entry.command())
            self._values[entry.id] = {k: select(config, k) for k in self.keys}
        return self._values[entry.id]

    def match(
        self,
        experiment: str,
        values: Mapping[str, Any],
        *,
        preset: str | None = None,
        has_test: bool = False,
    ) -> PaperEntry | None:
        """The entry of a run with ``experiment`` and these ``values`` of :attr:`keys`.

        A run made by a sweep preset is compared with its preset's entries (the paper prints
        different numbers for one configuration in different tables). Of several matches, a
        run with test metrics takes a ``test`` entry, others a ``val`` one; then file order.
        """
        candidates = [e for e in self.entries if e.experiment == experiment]
        if preset is not None and any(e.preset == preset for e in candidates):
            candidates = [e for e in candidates if e.preset == preset]
        found = [
            e for e in candidates if all(values.get(k) == v for k, v in self.values(e).items())
        ]
        preferred = "test" if has_test else "val"
        found.sort(key=lambda e: e.protocol != preferred)  # stable: file order otherwise
        return found[0] if found else None
