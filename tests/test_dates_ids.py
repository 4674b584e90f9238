"""Dates and IDs in tables (`data=csv`): date columns recognised (typed, or written as text in
several formats, never numbers or codes) and turned into calendar, trend and cyclic parts the
same way for prediction; a column with nearly one value per row left out with a note."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import train_in_process

from trainlab.components.data.dates import DATE_PARTS, NATIVE_DATES, NATIVE_TIMES, date_format
from trainlab.components.data.preprocessing import TablePreprocessor
from trainlab.components.data.tabular import load_table
from trainlab.errors import TrainlabError

ROWS = 60
WHERE = "data.path=t.csv"


def table(when: list[str] | pd.Series, rows: int = ROWS, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "a": rng.normal(size=rows).round(3),
            "when": list(when)[:rows],
            "y": rng.choice(["cat", "dog"], size=rows),
        }
    )


def write(tmp_path: Path, frame: pd.DataFrame, name: str = "t.csv") -> str:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


def dated(first: str, form: str, freq: str = "D", rows: int = ROWS) -> list[str]:
    return list(pd.date_range(first, periods=rows, freq=freq).strftime(form))


# value of the first row, the format found, and (year, month, day, weekday, hour or None)
FORMATS = [
    ("2024-03-05", "%Y-%m-%d", (2024, 3, 5, 1, None)),
    ("2024/03/05", "%Y/%m/%d", (2024, 3, 5, 1, None)),
    ("05/03/2024", "%d/%m/%Y", (2024, 3, 5, 1, None)),  # 13/03/2024 later says day first
    ("03/05/2024", "%m/%d/%Y", (2024, 3, 5, 1, None)),  # 03/13/2024 later: month first
    ("05.03.2024", "%d.%m.%Y", (2024, 3, 5, 1, None)),
    ("Mar 05, 2024", "%b %d, %Y", (2024, 3, 5, 1, None)),
    ("05 March 2024", "%d %B %Y", (2024, 3, 5, 1, None)),
    ("Tue, 05 Mar 2024 14:30:00", "%a, %d %b %Y %H:%M:%S", (2024, 3, 5, 1, 14.5)),
    ("2024-03-05T14:30:00+0000", "%Y-%m-%dT%H:%M:%S%z", (2024, 3, 5, 1, 14.5)),
    ("2024-03-05 14:30", "%Y-%m-%d %H:%M", (2024, 3, 5, 1, 14.5)),
    ("03/05/2024 02:30 PM", "%m/%d/%Y %I:%M %p", (2024, 3, 5, 1, 14.5)),
]


@pytest.mark.parametrize(("first", "form", "parts"), FORMATS)
def test_dates_written_as_text_are_recognised_in_many_formats(first, form, parts) -> None:
    values = dated("2024-03-05 14:30", form.replace("%z", "+0000"))
    assert values[0] == first
    assert date_format(pd.Series(values, dtype=object), "when", WHERE) == form
    frame = table(values)
    preprocessor = TablePreprocessor(None, ["a"], [], "y", "median", {"when": form})  # type: ignore[arg-type]
    typed = preprocessor.features(frame, "t").iloc[0]
    year, month, day, weekday, hour = parts
    assert (typed["when_year"], typed["when_month"], typed["when_day"]) == (year, month, day)
    assert typed["when_weekday"] == weekday
    assert typed["when_month_sin"] == pytest.approx(math.sin(2 * math.pi * 2 / 12))
    if hour is None:
        assert "when_hour" not in typed
    else:
        assert typed["when_hour"] == hour
        assert typed["when_hour_cos"] == pytest.approx(math.cos(2 * math.pi * hour / 24))


@pytest.mark.parametrize(
    ("values", "form"),
    [
        (["March 1st, 2024", "March 2nd, 2024", "March 3rd, 2024"], "%B %d, %Y"),
        (["2024/3/5", "2024/3/16", "2024/11/7"], "%Y/%m/%d"),
        (["2024-03-05T14:30:00Z", "2024-03-06T01:00:00Z"], "%Y-%m-%dT%H:%M:%S%z"),
        (["3/5/2024 2:30 PM", "3/6/2024 11:00 pm"], "%m/%d/%Y %I:%M %p"),
    ],
)
def test_ordinals_unpadded_fields_utc_marks_and_afternoons_are_dates(values, form) -> None:
    assert date_format(pd.Series(values, dtype=object), "when", WHERE) == form


@pytest.mark.parametrize(
    "values",
    [
        ["1.2.3", "10.4.12", "2.0.1", "3.1.4"],  # versions
        ["12-34-5678", "98-76-5432", "55-55-5555", "10-20-3040"],  # codes shaped like dates
        ["192.168.1.1", "10.0.0.1", "172.16.0.2", "8.8.8.8"],  # addresses
        ["555-123-4567", "555-765-4321", "555-000-1111", "555-222-3333"],  # phone numbers
        ["2024-03-05", "unknown", "2024-03-07", "n/a"],  # half dates: text
        ["20240305", "20240306", "20240307", "20240308"],  # a number, not a date
        ["red", "blue", "green", "red"],
    ],
)
def test_numbers_codes_and_words_are_not_dates(values) -> None:
    assert date_format(pd.Series(values, dtype=object), "c", WHERE) is None
    assert date_format(pd.Series([20240305, 20240306]), "c", WHERE) is None


@pytest.mark.parametrize(
    ("odd", "shown"),
    [
        ("03/07/2024", "'03/07/2024'"),  # another format
        ("2024-13-45", "'2024-13-45'"),  # no such month
        ("unknown", "'unknown'"),  # a word among dates
    ],
)
def test_a_column_of_dates_with_odd_values_is_refused_naming_them(odd, shown) -> None:
    values = dated("2024-03-05", "%Y-%m-%d", rows=20)
    values[7] = values[12] = odd
    with pytest.raises(TrainlabError) as raised:
        date_format(pd.Series(values, dtype=object), "when", WHERE)
    assert str(raised.value) == (
        f"column 'when' of {WHERE} holds dates, but 2 of 20 values do not read in the format "
        f"of '2024-03-05' (e.g. {shown}): write every date one way, e.g. 2024-03-05 14:30, "
        "empty the cells that are not dates, or leave the column out with "
        "data.drop_columns=[when]"
    )


def test_the_command_refuses_mixed_dates_in_one_line_and_leaves_no_run(tmp_path) -> None:
    values = dated("2024-03-05", "%Y-%m-%d")
    values[3] = "5 March 2024"
    write(tmp_path, table(values), "sales.csv")
    result = train_in_process("data=csv", "data.path=sales.csv", "data.target=y", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(
        "error: column 'when' of data.path=sales.csv holds dates, but 1 of 60 values do not "
        "read in the format of '2024-03-05' (e.g. '5 March 2024'): write every date one way"
    )
    assert "\n" not in result.stderr.strip()
    assert not list((tmp_path / "outputs" / "runs").glob("*"))


def test_cyclic_parts_put_december_next_to_january_and_sunday_next_to_monday() -> None:
    frame = table(["2023-12-31", "2024-01-01"] * (ROWS // 2))
    preprocessor = TablePreprocessor(None, [], [], "y", "median", {"when": "%Y-%m-%d"})  # type: ignore[arg-type]
    typed = preprocessor.features(frame, "t")
    december, january = typed.iloc[0], typed.iloc[1]
    assert (december["when_weekday"], january["when_weekday"]) == (6, 0)  # Sunday, Monday

    def gap(part: str) -> float:
        return math.dist(
            (december[f"when_{part}_sin"], december[f"when_{part}_cos"]),
            (january[f"when_{part}_sin"], january[f"when_{part}_cos"]),
        )

    assert gap("month") == pytest.approx(2 * math.sin(math.pi / 12))  # one month apart
    assert gap("weekday") == pytest.approx(2 * math.sin(math.pi / 7))  # one day apart


def test_prediction_reads_dates_as_training_did_bit_for_bit(tmp_path) -> None:
    frame = table(dated("2023-11-20 06:15", "%d/%m/%Y %H:%M", freq="17h"))
    bundle = load_table(seed=0, path=write(tmp_path, frame), target="y")
    assert bundle.preprocessor.dates == {"when": "%d/%m/%Y %H:%M"}
    assert bundle.info.input_shape == (1 + len(DATE_PARTS) + 3,)
    bundle.save(tmp_path / "run")
    new_rows = table(dated("2025-02-28 23:59", "%d/%m/%Y %H:%M", freq="5h"), rows=8, seed=1)
    new_rows.loc[3, "when"] = None  # a missing date is imputed, as in training
    expected = bundle.preprocessor.transform(new_rows, "new")
    loaded = TablePreprocessor.load(tmp_path / "run")
    assert loaded.transform(new_rows, "new").tobytes() == expected.tobytes()
    assert np.isfinite(expected).all()


def test_parquet_datetimes_get_the_hour_only_when_they_hold_times(tmp_path) -> None:
    days = pd.Series(pd.date_range("2024-01-01", periods=ROWS, freq="D"))
    hours = pd.Series(pd.date_range("2024-01-01 08:00", periods=ROWS, freq="7h", tz="UTC"))
    assert date_format(days) == NATIVE_DATES and date_format(hours) == NATIVE_TIMES
    path = tmp_path / "t.parquet"
    table(hours).to_parquet(path)
    bundle = load_table(seed=0, path=str(path), target="y")
    assert bundle.preprocessor.dates == {"when": NATIVE_TIMES}
    assert "numeric__when_hour_sin" in bundle.preprocessor.feature_names


def test_a_daily_weather_table_gets_a_few_date_inputs_not_one_per_day(tmp_path) -> None:
    # As in the issue: a date column of a daily table once became 1,026 one-hot inputs.
    rows = 1461
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "date": dated("2012-01-01", "%Y-%m-%d", rows=rows),
            "precipitation": rng.gamma(1.0, 3.0, rows).round(1),
            "temp_max": rng.normal(15, 7, rows).round(1),
            "weather": rng.choice(["rain", "sun", "fog"], rows),
        }
    )
    bundle = load_table(seed=0, path=write(tmp_path, frame), target="weather")
    assert bundle.info.input_shape == (2 + len(DATE_PARTS),)


@pytest.mark.parametrize(
    ("column", "kept"),
    [
        ([f"customer {i}" for i in range(ROWS)], False),  # a name per row
        ([f"C-{i % 40:03d}" for i in range(ROWS)], False),  # 40 levels in 60 rows
        ([f"shop {i % 19}" for i in range(ROWS)], True),  # 19 levels: a category
        ([f"shop {i % 25}" for i in range(ROWS)], True),  # 25 levels, under half the rows
    ],
)
def test_a_column_with_nearly_one_value_per_row_is_left_out_with_a_note(
    tmp_path, caplog, column, kept
) -> None:
    frame = table(dated("2024-01-01", "%Y-%m-%d")).drop(columns="when").assign(name=column)
    path = write(tmp_path, frame)
    with caplog.at_level(logging.INFO, logger="trainlab"):
        bundle = load_table(seed=0, path=path, target="y")
    assert ("name" in bundle.preprocessor.categorical) == kept
    distinct = len(set(column))
    note = (
        f"note: column 'name' of data.path={path} has {distinct} distinct texts in {ROWS} rows "
        "(an ID or a name?); it is left out: list it in data.categorical=[name] to one-hot "
        "encode it anyway"
    )
    assert (note in caplog.text) != kept
    declared = load_table(seed=0, path=path, target="y", categorical=["name"])
    assert "name" in declared.preprocessor.categorical and declared.info.input_shape[0] > 1 + 10
