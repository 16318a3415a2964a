"""The canonical tables every source is turned into, and the metadata that travels with them.

ratings: ``user_id``, ``item_id`` (int64, or str for CSV files with text ids), ``rating`` (float64),
``timestamp`` (int64, Unix seconds) and, where the source has a canonical train/test split,
``given_split`` (``"train"`` / ``"test"``).

items: ``item_id``, ``title`` (str), ``genres`` (``"|"``-joined names, ``""`` when unknown),
``year`` (nullable Int64).

users (where the source has them): ``user_id``, ``age`` (Int64), ``gender`` (str),
``occupation`` (str).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from recommender.core.config import RatingScale

USER, ITEM, RATING, TIMESTAMP = "user_id", "item_id", "rating", "timestamp"
GIVEN_SPLIT = "given_split"
RATING_COLUMNS = [USER, ITEM, RATING, TIMESTAMP]
ITEM_COLUMNS = [ITEM, "title", "genres", "year"]
USER_COLUMNS = [USER, "age", "gender", "occupation"]
GENRE_SEP = "|"
#: The longest text id (``csv.id_type: str``), in characters: what the service's request type
#: accepts, and so what the ``validate`` stage lets through (an id longer than this could be
#: trained on but never asked about).
MAX_ID_LENGTH = 128

#: Each source's own rating scale, used unless ``data.rating_scale`` overrides it.
SOURCE_SCALES: dict[str, RatingScale] = {
    "synthetic": RatingScale(min=1.0, max=5.0, step=1.0),
    "movielens-100k": RatingScale(min=1.0, max=5.0, step=1.0),
    "movielens-1m": RatingScale(min=1.0, max=5.0, step=1.0),
    "movielens-latest-small": RatingScale(min=0.5, max=5.0, step=0.5),
    "movielens-25m": RatingScale(min=0.5, max=5.0, step=0.5),
    "csv": RatingScale(min=1.0, max=5.0, step=1.0),
}


@dataclass(frozen=True)
class DatasetInfo:
    """What downstream stages (and the served model) need to know about the data.

    Written next to the tables as ``dataset.json``.
    """

    source: str
    rating_scale: RatingScale
    id_type: str = "int"
    has_users: bool = False
    has_given_split: bool = False
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        d = asdict(self)
        d["rating_scale"] = self.rating_scale.model_dump()
        return json.dumps(d, indent=2, sort_keys=True) + "\n"

    @classmethod
    def read(cls, path: str | Path) -> DatasetInfo:
        d = json.loads(Path(path).read_text())
        d["rating_scale"] = RatingScale(**d["rating_scale"])
        return cls(**d)


@dataclass
class Dataset:
    """One source's data in canonical form."""

    ratings: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame | None
    info: DatasetInfo


def empty_users() -> pd.DataFrame:
    """A users table with the canonical columns and no rows (for sources without user data)."""
    return pd.DataFrame(
        {
            USER: pd.Series([], dtype="int64"),
            "age": pd.Series([], dtype="Int64"),
            "gender": pd.Series([], dtype="str"),
            "occupation": pd.Series([], dtype="str"),
        }
    )


def write_dataset(dataset: Dataset, out_dir: str | Path) -> None:
    """Write the canonical tables and ``dataset.json`` to ``out_dir``, replacing it atomically."""
    from recommender.core.io import staged_dir

    with staged_dir(out_dir) as tmp:
        dataset.ratings.to_parquet(tmp / "ratings.parquet", index=False)
        dataset.items.to_parquet(tmp / "items.parquet", index=False)
        users = dataset.users if dataset.users is not None else empty_users()
        users.to_parquet(tmp / "users.parquet", index=False)
        (tmp / "dataset.json").write_text(dataset.info.to_json())


def read_dataset(in_dir: str | Path) -> Dataset:
    """Read what :func:`write_dataset` wrote."""
    in_dir = Path(in_dir)
    info = DatasetInfo.read(in_dir / "dataset.json")
    users = pd.read_parquet(in_dir / "users.parquet") if info.has_users else None
    return Dataset(
        ratings=pd.read_parquet(in_dir / "ratings.parquet"),
        items=pd.read_parquet(in_dir / "items.parquet"),
        users=users,
        info=info,
    )
