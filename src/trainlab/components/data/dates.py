"""Date and time columns of a table: recognised (typed by the file, or dates written as text)
and turned into numeric model inputs.

A column is a date column when the file typed it as datetimes (Parquet), or when at least
`DATE_SHARE` of its texts look like dates and read as real ones. Looking like a date means
a four-digit year with a month and a day (`2024-03-05`, `05/03/2024`, `3.5.2024`, the year
first or last), or a month name (`Mar 5, 2024`, `5 March 2024`, `Tue, 05 Mar 2024`), each
with an optional time of day and UTC offset. Numbers, version strings (`1.2.3`), phone
numbers and codes are not dates. A date column must be written in one format (found from
its values, day first when some first field is above 12): values that do not read in it
are refused in one line naming the column and examples.

Each date column becomes `DATE_PARTS` (plus `TIME_PARTS` when it holds times of day),
named `<column>_<part>`: the calendar parts, days since 1970-01-01 UTC (the trend), and
sine / cosine of the month, the day of the week and the hour, so that December sits next to
January and Sunday next to Monday. A missing date gives gaps, imputed like any number.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
from pandas.api import types

from trainlab.errors import TrainlabError

DATE_PARTS = (
    "year",
    "month",
    "day",
    "weekday",  # Monday is 0
    "days",  # days since 1970-01-01 UTC, the time of day as a fraction
    "month_sin",
    "month_cos",
    "weekday_sin",
    "weekday_cos",
)
TIME_PARTS = ("hour", "hour_sin", "hour_cos")  # the hour with its minutes as a fraction
# The format of a column the file already typed as datetimes: dates only, or with times.
NATIVE_DATES = ""
NATIVE_TIMES = "datetime"
# The share of a column's texts that must be dates for it to be a date column.
DATE_SHARE = 0.8

_TIME = r"([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?(\s*[AaPp][Mm])?)?\s*(Z|UTC|[+-]\d{2}:?\d{2})?"
_MONTH = r"(jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_WEEKDAY = r"((mon|tue|wed|thu|fri|sat|sun)[a-z]*\.?,?\s+)?"
DATE_LIKE = re.compile(
    r"(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}"  # year first
    r"|\d{1,2}[-/.]\d{1,2}[-/.]\d{4}"  # year last: day/month or month/day
    rf"|{_WEEKDAY}\d{{1,2}}\s+{_MONTH},?\s+\d{{4}}"  # 5 March 2024
    rf"|{_WEEKDAY}{_MONTH}\s+\d{{1,2}},?\s+\d{{4}})" + _TIME,  # March 5, 2024
    re.IGNORECASE,
)
_ORDINAL = re.compile(r"(?<=\d)(st|nd|rd|th)\b", re.IGNORECASE)
_AFTERNOON = re.compile(r"(?<=\d)(\s*)([Pp])([Mm])")


def _clean(texts: pd.Series) -> pd.Series:
    """Texts as the date parser reads them: stripped, ordinals dropped (5th -> 5)."""
    return texts.astype(str).str.strip().str.replace(_ORDINAL, "", regex=True)


def date_format(series: pd.Series, name: str = "", where: str = "") -> str | None:
    """The format of a date column (see the module), or None when `series` is not dates.

    A column of dates whose values do not all read in one format is refused in one line."""
    if types.is_datetime64_any_dtype(series):
        stamps = pd.to_datetime(series, utc=True).dropna()
        midnight = (stamps == stamps.dt.normalize()).all()
        return NATIVE_DATES if midnight else NATIVE_TIMES
    values = series.dropna()
    if values.empty or types.is_numeric_dtype(values) or types.is_bool_dtype(values):
        return None

    def date_like(texts: pd.Series) -> pd.Series:
        return texts.map(lambda text: DATE_LIKE.fullmatch(text) is not None)

    if date_like(_clean(values.iloc[:100])).mean() < DATE_SHARE / 2:  # most text columns
        return None
    texts = _clean(values)
    texts = texts[texts != ""]
    if texts.empty:
        return None
    looks = date_like(texts)
    if looks.mean() < DATE_SHARE:
        return None
    day_first = _day_first(texts[looks])
    form = _common_format(texts[looks], day_first)
    parsed = (
        pd.to_datetime(texts, format=form, errors="coerce", utc=True)
        if form
        else pd.Series(pd.NaT, index=texts.index)
    )
    if parsed.notna().mean() < DATE_SHARE and not _real_dates(texts[looks], day_first):
        return None  # codes shaped like dates (12-34-5678) are not dates
    if parsed.isna().any() or form is None:
        bad = texts[parsed.isna()]
        examples = ", ".join(repr(v) for v in bad.unique()[:3])
        model = f"the format of {texts.iloc[0]!r}" if form else "one format"
        raise TrainlabError(
            f"column '{name}' of {where} holds dates, but {len(bad)} of {len(texts)} values "
            f"do not read in {model} (e.g. {examples}): write every date one way, e.g. "
            f"2024-03-05 14:30, empty the cells that are not dates, or leave the column out "
            f"with data.drop_columns=[{name}]"
        )
    return form


def _common_format(texts: pd.Series, day_first: bool) -> str | None:
    """The format guessed for most of the first texts (one odd value does not decide)."""
    from pandas.tseries.api import guess_datetime_format

    def guess(text: str) -> str | None:
        # pandas guesses no format for afternoon times ("2:30 PM"); the morning's is the same.
        morning = _AFTERNOON.sub(lambda m: m[1] + ("A" if m[2] == "P" else "a") + m[3], text)
        return guess_datetime_format(text, dayfirst=day_first) or guess_datetime_format(
            morning, dayfirst=day_first
        )

    with warnings.catch_warnings():
        # A guess against `day_first` warns; every guess is checked by parsing all values.
        warnings.simplefilter("ignore", UserWarning)
        guesses = [guess(text) for text in texts.iloc[:50]]
    found = pd.Series([g for g in guesses if g is not None], dtype=object)
    return None if found.empty else str(found.value_counts().index[0])


def _real_dates(texts: pd.Series, day_first: bool) -> bool:
    """Whether most texts read as calendar dates in some format or other."""
    sample = texts.iloc[:200]
    parsed = pd.to_datetime(sample, format="mixed", dayfirst=day_first, errors="coerce")
    return bool(parsed.notna().mean() >= DATE_SHARE)


def _day_first(texts: pd.Series) -> bool:
    """Whether a file of d/m/y dates says so: some first field above 12 (13/04/2024)."""
    first = texts.str.extract(r"^(\d{1,2})[-/.]\d{1,2}[-/.]\d{4}", expand=False).dropna()
    return bool(len(first)) and bool((first.astype(int) > 12).any())


def has_time(form: str) -> bool:
    """Whether a date column of this format holds times of day (and so the hour parts)."""
    return form == NATIVE_TIMES or "%H" in form or "%I" in form


def parts_of(form: str) -> tuple[str, ...]:
    return DATE_PARTS + TIME_PARTS if has_time(form) else DATE_PARTS


def date_columns(dates: dict[str, str]) -> list[str]:
    """The numeric inputs the date columns `dates` (name -> format) become."""
    return [f"{name}_{part}" for name, form in dates.items() for part in parts_of(form)]


def date_parts(series: pd.Series, name: str, form: str) -> pd.DataFrame:
    """The numeric inputs of a date column; a missing or unreadable date gives gaps."""
    if form in (NATIVE_DATES, NATIVE_TIMES):
        stamps = pd.to_datetime(series, errors="coerce", utc=True)
    else:
        texts = series.where(series.isna(), _clean(series))
        stamps = pd.to_datetime(texts, format=form, errors="coerce", utc=True)
    stamps = stamps.dt.tz_convert(None)
    month, weekday = stamps.dt.month, stamps.dt.day_of_week
    hour = stamps.dt.hour + stamps.dt.minute / 60
    values = {
        "year": stamps.dt.year,
        "month": month,
        "day": stamps.dt.day,
        "weekday": weekday,
        "days": (stamps - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1),
        "month_sin": np.sin(2 * np.pi * (month - 1) / 12),
        "month_cos": np.cos(2 * np.pi * (month - 1) / 12),
        "weekday_sin": np.sin(2 * np.pi * weekday / 7),
        "weekday_cos": np.cos(2 * np.pi * weekday / 7),
        "hour": hour,
        "hour_sin": np.sin(2 * np.pi * hour / 24),
        "hour_cos": np.cos(2 * np.pi * hour / 24),
    }
    return pd.DataFrame(
        {f"{name}_{part}": values[part].astype("float64") for part in parts_of(form)},
        index=series.index,
    )
