"""The expectations: a GX suite for the ``ratings`` table and one for ``items``.

Built from ``params.validate`` and the dataset's rating scale and id type. Great Expectations is
imported inside :func:`build_suites` only: importing it costs seconds.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from recommender.core.config import RatingScale, ValidateConfig
from recommender.core.errors import ConfigError
from recommender.core.schema import (
    GIVEN_SPLIT,
    ITEM,
    ITEM_COLUMNS,
    MAX_ID_LENGTH,
    RATING,
    RATING_COLUMNS,
    TIMESTAMP,
    USER,
)
from recommender.core.telemetry import disable_telemetry

if TYPE_CHECKING:
    from great_expectations import ExpectationSuite

#: The tables we validate, in report order, and the GX suite that checks each.
SUITE_NAMES = {"ratings": "recommender_ratings", "items": "recommender_items"}
#: Years a film can plausibly carry (where the items table knows one).
YEAR_MIN, YEAR_MAX = 1870, 2100
#: Type names GX may report for integer ids: numpy/pandas dtypes for typed columns, and ``int``
#: for the Python ints in an ``object`` column (where one stray string turns the dtype to object).
INT_TYPES = ["int", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
             "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64"]  # fmt: skip
#: The same for GX's Spark engine, which reports Spark SQL type names (``LongType``, ...).
SPARK_INT_TYPES = ["IntegerType", "LongType", "ShortType", "ByteType"]
#: What GX runs the suites on: its pandas engine, or its Spark one (``data.engine: spark``).
Engine = Literal["pandas", "spark"]
#: A column :func:`~recommender.validation.run.validate_dataset` adds to the ratings GX sees: is
#: the row's item in the items table? GX has no cross-table check for pandas, and an ``in_set``
#: over the items' ids is slow (GX copies its kwargs many times: 10 s for 60k items); a boolean
#: column costs milliseconds. On Spark it comes from a left join with the items' distinct ids
#: (:mod:`~recommender.validation.spark_frames`).
ITEM_KNOWN = "item_id_in_items"
SPLITS = ["train", "test"]
#: Clock skew tolerated when ``timestamp_max`` is ``null`` ("no later than now").
ONE_DAY = 86_400


def _unix_seconds(value: str, key: str) -> int:
    """Parse a params date (``"1995-01-01"``, naive means UTC) into Unix seconds."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"params.yaml: validate.{key}: {value!r} is not a date (expected e.g. '1995-01-01')"
        ) from exc
    if ts is pd.NaT:
        raise ConfigError(f"params.yaml: validate.{key}: a date is required, got {value!r}")
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return int(ts.timestamp())


def _date(seconds: int) -> str:
    return pd.Timestamp(seconds, unit="s", tz="UTC").strftime("%Y-%m-%d %H:%M UTC")


def timestamp_bounds(cfg: ValidateConfig, now: float | None = None) -> tuple[int, int]:
    """The allowed ``[min, max]`` of ``timestamp`` in Unix seconds (``null`` max: now + 1 day)."""
    low = _unix_seconds(cfg.timestamp_min, "timestamp_min")
    if cfg.timestamp_max is None:
        high = int(time.time() if now is None else now) + ONE_DAY
    else:
        high = _unix_seconds(cfg.timestamp_max, "timestamp_max")
    if low > high:
        raise ConfigError(
            f"params.yaml: validate.timestamp_min ({cfg.timestamp_min}) is after "
            f"validate.timestamp_max ({cfg.timestamp_max or 'now'})"
        )
    return low, high


def build_suites(
    cfg: ValidateConfig,
    scale: RatingScale,
    *,
    id_type: str = "int",
    given_split: bool = False,
    now: float | None = None,
    engine: Engine = "pandas",
) -> dict[str, ExpectationSuite]:
    """Build the GX suites for the ``ratings`` and ``items`` tables.

    That every rated item is in the items table is checked on the boolean column
    ``item_id_in_items``, which :func:`~recommender.validation.run.validate_dataset` adds to the
    ratings it hands to GX.

    Args:
        cfg: ``params.validate`` (thresholds).
        scale: The dataset's rating scale; ratings must be one of ``scale.values()``.
        id_type: ``"int"`` requires integer ids; ``"str"`` (CSV files with text ids) requires
            ids of 1 to ``MAX_ID_LENGTH`` characters, the longest the service's requests take.
        given_split: Whether ratings carry a ``given_split`` column (``train``/``test`` only).
        now: Unix time standing for "now" when ``timestamp_max`` is ``null`` (default: the clock).
        engine: The GX engine the suites will run on: it names the integer types its own way
            (:data:`INT_TYPES` for pandas, :data:`SPARK_INT_TYPES` for Spark). Nothing else
            differs.

    Returns:
        ``{"ratings": suite, "items": suite}``, not yet added to any GX context.
    """
    disable_telemetry()  # before GX is first imported
    import great_expectations as gx
    import great_expectations.expectations as gxe

    int_types = SPARK_INT_TYPES if engine == "spark" else INT_TYPES
    ratings = _ratings_expectations(gxe, cfg, scale, id_type, given_split, now, int_types)
    items = _items_expectations(gxe, id_type, int_types)
    # Built whole: ``suite.add_expectation`` would need an active GX context.
    return {
        "ratings": gx.ExpectationSuite(name=SUITE_NAMES["ratings"], expectations=ratings),
        "items": gx.ExpectationSuite(name=SUITE_NAMES["items"], expectations=items),
    }


def _ratings_expectations(
    gxe: Any,
    cfg: ValidateConfig,
    scale: RatingScale,
    id_type: str,
    given_split: bool,
    now: float | None,
    int_types: list[str],
) -> list[Any]:
    """The ratings table's expectations: columns, ids, values, then the table's size."""
    rating_columns = RATING_COLUMNS + ([GIVEN_SPLIT] if given_split else [])
    ratings: list[Any] = [gxe.ExpectColumnToExist(column=c) for c in rating_columns]
    ratings += [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in RATING_COLUMNS]
    if id_type == "int":
        ratings += [
            gxe.ExpectColumnValuesToBeInTypeList(
                column=c, type_list=int_types, notes=f"id_type is 'int': {c} must be an integer"
            )
            for c in (USER, ITEM)
        ]
    else:
        ratings += [_id_length(gxe, c) for c in (USER, ITEM)]
    ratings += [
        gxe.ExpectColumnValuesToBeInSet(
            column=RATING,
            value_set=scale.values(),
            notes=f"the rating scale: {scale.min:g} to {scale.max:g} in steps of {scale.step:g}",
        ),
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=[USER, ITEM], notes="one rating per (user_id, item_id)"
        ),
        _timestamp_expectation(gxe, cfg, now),
        gxe.ExpectTableRowCountToBeBetween(min_value=cfg.min_ratings, notes="validate.min_ratings"),
        gxe.ExpectColumnUniqueValueCountToBeBetween(
            column=USER, min_value=cfg.min_users, notes="validate.min_users"
        ),
        gxe.ExpectColumnUniqueValueCountToBeBetween(
            column=ITEM, min_value=cfg.min_items, notes="validate.min_items"
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column=ITEM_KNOWN,
            value_set=[True],
            notes="every rated item_id is in the items table",
        ),
    ]
    if given_split:
        ratings += [
            gxe.ExpectColumnValuesToNotBeNull(column=GIVEN_SPLIT),
            gxe.ExpectColumnValuesToBeInSet(column=GIVEN_SPLIT, value_set=SPLITS),
        ]
    return ratings


def _timestamp_expectation(gxe: Any, cfg: ValidateConfig, now: float | None) -> Any:
    """Timestamps within ``validate``'s dates; 0 ("no timestamp") too if the params allow it."""
    from great_expectations.expectations.row_conditions import Column

    ts_min, ts_max = timestamp_bounds(cfg, now)
    return gxe.ExpectColumnValuesToBeBetween(
        column=TIMESTAMP,
        min_value=ts_min,
        max_value=ts_max,
        # 0 stands for "no timestamp" in files without one; only then is it allowed.
        row_condition=(Column(TIMESTAMP) != 0) if cfg.allow_missing_timestamps else None,
        notes=f"Unix seconds from {_date(ts_min)} to {_date(ts_max)}"
        + (" (0 allowed: no timestamp)" if cfg.allow_missing_timestamps else ""),
    )


def _items_expectations(gxe: Any, id_type: str, int_types: list[str]) -> list[Any]:
    """The items table's expectations: its columns, one row per well-formed id, plausible years."""
    items: list[Any] = [gxe.ExpectColumnToExist(column=c) for c in ITEM_COLUMNS]
    items += [
        gxe.ExpectColumnValuesToNotBeNull(column=ITEM),
        gxe.ExpectColumnValuesToBeUnique(column=ITEM, notes="one row per item"),
        # Nulls are skipped by GX's column-map expectations: an unknown year is allowed.
        gxe.ExpectColumnValuesToBeBetween(
            column="year", min_value=YEAR_MIN, max_value=YEAR_MAX, notes="where known"
        ),
    ]
    if id_type == "int":
        items.append(gxe.ExpectColumnValuesToBeInTypeList(column=ITEM, type_list=int_types))
    else:
        items.append(_id_length(gxe, ITEM))
    return items


def _id_length(gxe: Any, column: str) -> Any:
    """Text ids no longer than the service accepts (``MAX_ID_LENGTH``, the request type's limit)."""
    return gxe.ExpectColumnValueLengthsToBeBetween(
        column=column,
        min_value=1,
        max_value=MAX_ID_LENGTH,
        notes=f"id_type is 'str': the service takes {column} of 1 to {MAX_ID_LENGTH} characters",
    )
