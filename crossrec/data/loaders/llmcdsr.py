"""The LLMCDSR cross-domain release (Xin et al., TOIS 2025), e.g. its Food-Kitchen folder.

Files: ``train_A.txt``, ``train_B.txt`` (single-domain users), ``train_overlap.txt`` (overlapping
training users), ``valid.txt``, ``test.txt`` (overlapping held-out users; the last item of a line
is the target), ``num.txt`` (item counts of A and B), ``item_set_{A,B}.pkl`` ({ASIN: index}) and
``text_{A,B}.pkl`` ({ASIN: title}). Interaction lines are ``<user_no>\\t<id>,<id>,...`` with
0-based global ids: A's items first, then B's (``id - num_A``). ``user_no`` restarts in every
file, so users are named ``<file stem>/<user_no>``.
"""

from __future__ import annotations

import html
import io
import pickle
from pathlib import Path
from typing import Any

from crossrec.config import DataConfig
from crossrec.data.dataset import CrossDomainDataset, PredefinedSplit
from crossrec.data.io import iter_lines, open_binary
from crossrec.data.loaders import register_loader
from crossrec.data.schema import EventType, Interaction, Item
from crossrec.errors import DataError

INTERACTION_FILES = ("train_A.txt", "train_B.txt", "train_overlap.txt", "valid.txt", "test.txt")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain containers and scalars only: every global (class, function) is refused,
    so a tampered pickle cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def load_plain_pickle(path: Path) -> Any:
    """Loads a pickle that may hold only builtin containers and scalars."""
    with open_binary(path) as handle:
        data = handle.read()
    if not data:
        raise DataError(path, "file is empty; expected a pickled dict")
    try:
        return RestrictedUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as exc:
        raise DataError(path, f"unsafe or invalid pickle: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any other failure is a corrupt file
        raise DataError(path, f"cannot unpickle: {type(exc).__name__}: {exc}") from None


def _string_dict(path: Path, value_type: type) -> dict[str, Any]:
    obj = load_plain_pickle(path)
    if not isinstance(obj, dict):
        raise DataError(path, f"expected a dict, found {type(obj).__name__}")
    for key, val in obj.items():
        if not isinstance(key, str) or not isinstance(val, value_type):
            raise DataError(
                path,
                f"expected str -> {value_type.__name__} entries, found "
                f"{type(key).__name__} -> {type(val).__name__} (key {key!r})",
            )
    return obj


def _read_counts(path: Path) -> tuple[int, int]:
    values: list[int] = []
    for lineno, line in iter_lines(path, expected="two item counts, one per line"):
        try:
            values.append(int(line.strip()))
        except ValueError:
            raise DataError(
                path, f"expected an integer item count, found {line!r}", lineno
            ) from None
    if len(values) != 2 or min(values) <= 0:
        raise DataError(path, f"expected two positive item counts (A, B), found {values}")
    return values[0], values[1]


def _domain_items(root: Path, letter: str, domain: str, count: int) -> list[Item]:
    index_path = root / f"item_set_{letter}.pkl"
    text_path = root / f"text_{letter}.pkl"
    index = _string_dict(index_path, int)
    titles = _string_dict(text_path, str)
    if len(index) != count:
        raise DataError(index_path, f"holds {len(index)} items but num.txt says {count}")
    by_position: list[str | None] = [None] * count
    for asin, pos in index.items():
        if not 0 <= pos < count or by_position[pos] is not None:
            raise DataError(index_path, f"index {pos} of {asin!r} is out of range or repeated")
        by_position[pos] = asin
    items: list[Item] = []
    for entry in by_position:
        assert entry is not None
        asin = entry
        if asin not in titles:
            raise DataError(text_path, f"no title for item {asin!r}")
        items.append(Item(domain=domain, item_id=asin, title=html.unescape(titles[asin]).strip()))
    return items


@register_loader("llmcdsr")
def load_llmcdsr(path: Path | None, cfg: DataConfig) -> CrossDomainDataset:
    """Loads an LLMCDSR release folder; domain names come from ``cfg.domain_names`` (A, B)."""
    if path is None or not path.is_dir():
        raise DataError(str(path), "the llmcdsr format needs the release directory")
    names = cfg.domain_names or ["A", "B"]
    if len(names) != 2:
        raise DataError(path, f"llmcdsr has two domains; data.domain_names gave {names}")
    num_a, num_b = _read_counts(path / "num.txt")
    items = _domain_items(path, "A", names[0], num_a) + _domain_items(path, "B", names[1], num_b)
    total = num_a + num_b

    interactions: list[Interaction] = []
    split_users: dict[str, list[str]] = {"valid": [], "test": []}
    for file_name in INTERACTION_FILES:
        file = path / file_name
        stem = file_name.removesuffix(".txt")
        seen_users: set[str] = set()
        for lineno, line in iter_lines(file, expected="lines of '<user>\\t<item>,<item>,...'"):
            user_no, sep, seq = line.partition("\t")
            if not sep or not user_no.strip() or not seq.strip():
                raise DataError(file, "expected '<user>\\t<item>,<item>,...'", lineno)
            user = f"{stem}/{user_no.strip()}"
            if user in seen_users:
                raise DataError(file, f"user {user_no.strip()!r} appears twice", lineno)
            seen_users.add(user)
            for pos, token in enumerate(seq.split(",")):
                try:
                    gid = int(token)
                except ValueError:
                    raise DataError(
                        file, f"item #{pos + 1} is {token!r}; expected an integer item id", lineno
                    ) from None
                if not 0 <= gid < total:
                    raise DataError(
                        file, f"item id {gid} is outside 0..{total - 1} (num.txt)", lineno
                    )
                item = items[gid]
                interactions.append(
                    Interaction(
                        user_id=user,
                        domain=item.domain,
                        item_id=item.item_id,
                        order=pos,
                        event_type=EventType.PURCHASE,
                    )
                )
            if stem in split_users:
                split_users[stem].append(user)
    split = PredefinedSplit(
        name="llmcdsr",
        valid_users=tuple(split_users["valid"]),
        test_users=tuple(split_users["test"]),
    )
    return CrossDomainDataset.from_records(
        items, interactions, source=str(path), name=path.name, predefined_split=split
    )
