"""Reading data files and DataFrames: happy paths and one clear DataError per malformed input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jaximpute.data import DataTable, from_dataframe, read_table
from jaximpute.errors import DataError

NAMES = ["id", "x", "y"]


def write(tmp_path, text, name="data.csv", mode="w"):
    path = tmp_path / name
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text, newline="")
    return path


def same(a, b):
    return np.array_equal(np.asarray(a, dtype=float), np.asarray(b, dtype=float), equal_nan=True)


nan = np.nan

# --------------------------------------------------------------------------------------------
# files that read


def test_csv_with_header(tmp_path):
    t = read_table(write(tmp_path, "id,x,y\n1,2.5,3\n2,,4\n"))
    assert isinstance(t, DataTable)
    assert t.names == ("id", "x", "y")
    assert same(t.values, [[1, 2.5, 3], [2, nan, 4]])
    assert t.values.dtype == np.float64
    assert t.header_row is True
    assert list(t.integer_columns) == [True, False, True]
    assert t.source.endswith("data.csv")
    assert t.missing_code is None


def test_csv_without_header_uses_names(tmp_path):
    t = read_table(write(tmp_path, "1,2,3\n4,5,6\n"), NAMES)
    assert t.names == tuple(NAMES)
    assert same(t.values, [[1, 2, 3], [4, 5, 6]])
    assert t.header_row is False


def test_header_row_skipped_when_names_given(tmp_path):
    t = read_table(write(tmp_path, "ID,x,\"y\"\n1,2,3\n"), NAMES)   # VARIABLES' names, any case
    assert t.names == tuple(NAMES)                          # in VARIABLES' spelling
    assert same(t.values, [[1, 2, 3]])
    assert t.header_row is True


@pytest.mark.parametrize("header,first", [("id,y,x", "column 2 is 'y' in the file but 'x'"),
                                          ("a,b,c", "column 1 is 'a' in the file but 'id'")])
def test_a_header_row_that_names_the_columns_otherwise_is_refused(tmp_path, header, first):
    """Skipping it would rename the file's columns silently (issue 18): x and y swapped."""
    path = write(tmp_path, header + "\n1,2,3\n")
    with pytest.raises(DataError) as info:
        read_table(path, NAMES)
    message = str(info.value)
    for fragment in (str(path), "row 1 is a header row", f"'{header}'", "VARIABLES (id x y)",
                     first, "reorder VARIABLES", "remove the header row"):
        assert fragment in message, (fragment, message)


def test_a_header_row_is_compared_after_the_callers_own_columns(tmp_path):
    """analyze's stacked files: the imputation column's name is the caller's, not the user's."""
    t = read_table(write(tmp_path, "imp,id,x,y\n1,1,2,3\n"), ["imputation", *NAMES],
                   names_origin="--names", own_leading=1)
    assert t.names == ("imputation", *NAMES)
    with pytest.raises(DataError, match=r"whose names differ from --names \(id x y\): column 3 is "
                                         r"'y' in the file but 'x' in --names"):
        read_table(write(tmp_path, "imp,id,y,x\n1,1,2,3\n"), ["imputation", *NAMES],
                   names_origin="--names", own_leading=1)


def test_quoted_header_names(tmp_path):
    t = read_table(write(tmp_path, '"id","x"\n1,2\n'))
    assert t.names == ("id", "x")


def test_whitespace_delimited(tmp_path):
    text = "  1   2.5\t3\n2\t\t.  4 \n\n\n"
    t = read_table(write(tmp_path, text, "data.dat"), NAMES)
    assert same(t.values, [[1, 2.5, 3], [2, nan, 4]])


def test_missing_code_matches_numerically(tmp_path):
    t = read_table(write(tmp_path, "1,-99,3\n-99.0,5,-99.00\n7,-99.5,9\n"), NAMES, -99)
    assert same(t.values, [[1, nan, 3], [nan, 5, nan], [7, -99.5, 9]])
    assert t.missing_code == -99.0
    assert list(t.integer_columns) == [True, False, True]


def test_missing_code_given_as_text(tmp_path):
    t = read_table(write(tmp_path, "1 999\n2 3\n", "d.dat"), ["a", "b"], "999")
    assert same(t.values, [[1, nan], [2, 3]])


@pytest.mark.parametrize("token", ["", "NA", "NaN", "nan", ".", "N/A"])
def test_missing_tokens(tmp_path, token):
    t = read_table(write(tmp_path, f"1,{token},3\n"), NAMES)
    assert same(t.values, [[1, nan, 3]])


def test_blank_lines_at_start_and_end_crlf_and_bom(tmp_path):
    raw = b"\xef\xbb\xbf\r\nid,x\r\n1,2\r\n3,4\r\n\r\n  \r\n"
    t = read_table(write(tmp_path, raw, mode="wb"))
    assert t.names == ("id", "x")
    assert same(t.values, [[1, 2], [3, 4]])


def test_row_numbers_count_leading_blank_lines(tmp_path):
    with pytest.raises(DataError, match=r"row 4, column 2 \(x\)"):
        read_table(write(tmp_path, "\n\n1,2,3\n4,oops,6\n"), NAMES)


def test_scientific_notation_and_signs(tmp_path):
    t = read_table(write(tmp_path, "1e3,-2.5E-1,+3\n"), NAMES)
    assert same(t.values, [[1000, -0.25, 3]])


def test_all_missing_column_counts_as_integer(tmp_path):
    t = read_table(write(tmp_path, "1,,3\n2,NA,4\n"), NAMES)
    assert list(t.integer_columns) == [True, True, True]


def test_one_column_file(tmp_path):
    t = read_table(write(tmp_path, "y\n1\nNA\n3\n"))
    assert t.names == ("y",)
    assert same(t.values, [[1], [nan], [3]])


def test_large_file_reads_exactly(tmp_path):
    rng = np.random.default_rng(0)
    data = np.round(rng.normal(size=(50_000, 5)) * 100, 3)
    data[rng.random(data.shape) < 0.1] = -99
    path = tmp_path / "big.dat"
    np.savetxt(path, data, fmt="%.3f", delimiter=" ")
    t = read_table(path, list("abcde"), -99)
    expected = np.where(data == -99, np.nan, data)
    assert same(t.values, expected)


def test_names_as_path_objects_and_strings(tmp_path):
    path = write(tmp_path, "1,2,3\n")
    assert read_table(str(path), NAMES).source == str(path)


# --------------------------------------------------------------------------------------------
# malformed files: one DataError naming file, row and column


MALFORMED = [
    # (file text, names, missing code, fragments the message must contain)
    ("1,2,3\n4,5,6\n7,abc,9\n", NAMES, -99,
     ["data.csv", "row 3, column 2 (x)", "'abc' is not a number", "missing code -99"]),
    ("1,2,3\n4,5\n", NAMES, None,
     ["data.csv", "row 2 has 2 columns; expected 3", "VARIABLES"]),
    ("1,2,3\n4,5,6\n7,8,9,10\n", NAMES, None, ["row 3 has 4 columns; expected 3"]),
    ("", NAMES, None, ["data.csv", "empty"]),
    ("\n  \n\n", None, None, ["data.csv", "empty"]),
    ("id,x,y\n", None, None, ["data.csv", "no data rows"]),
    ("id,x,id\n1,2,3\n", None, None, ["row 1", "columns 1 and 3", "'id'"]),
    ("1,2,3\n4,5,inf\n", NAMES, None, ["row 2, column 3 (y)", "'inf'", "finite"]),
    ("1,2,3\n4,1e400,6\n", NAMES, None, ["row 2, column 2 (x)", "'1e400'", "finite"]),
    ("1,2,3\n", None, None, ["row 1, column 1", "no header row", "VARIABLES"]),
    ("1,2,3\n\n4,5,6\n", NAMES, None, ["row 2 is empty", "expected 3"]),
    ("id,,y\n1,2,3\n", None, None, ["row 1, column 2", "empty name"]),
    ("a,b\n1,2,3\n", NAMES, None, ["row 1 (a header row) has 2 columns; expected 3"]),
    ("1,1_000,3\n", NAMES, None, ["row 1, column 2 (x)", "'1_000'"]),
    ("id,2,y\n1,2,3\n", NAMES, None, ["row 1, column 1 (id)", "'id'", "header row"]),
    ("1;2;3\n", NAMES, None, ["row 1", "has 1 column;", "';'"]),
    ("1 2 3\n4 5 6\n7\tx7\t9\n", NAMES, 999, ["row 3, column 2 (x)", "'x7'", "missing code 999"]),
    ("1 2 3\n4,5,6\n", NAMES, None, ["row 2 has 1 column;", "whitespace-separated"]),
    ("1,2,3\n4,5,--6\n", NAMES, None, ["row 2, column 3 (y)", "'--6'"]),
    ("1,2,3\n4, 5 x ,6\n", NAMES, None, ["row 2, column 2 (x)", "'5 x'"]),
]


@pytest.mark.parametrize("text,names,code,fragments", MALFORMED)
def test_malformed_file(tmp_path, text, names, code, fragments):
    path = write(tmp_path, text)
    with pytest.raises(DataError) as info:
        read_table(path, names, code)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_bad_token_deep_in_a_large_file(tmp_path):
    lines = [f"{i},{i % 7},{i * 0.5}" for i in range(20_000)]
    lines[12_344] = "12344,7,seven"
    path = write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"row 12345, column 3 \(y\): 'seven' is not a number"):
        read_table(path, NAMES)


def test_names_origin_in_message(tmp_path):
    path = write(tmp_path, "1,2\n")
    with pytest.raises(DataError, match=r"expected 3 \(the number of names in VARNAMES\)"):
        read_table(path, NAMES, names_origin="VARNAMES")


def test_duplicate_variables_names(tmp_path):
    with pytest.raises(DataError, match="VARIABLES names 'x' twice"):
        read_table(write(tmp_path, "1,2,3\n"), ["a", "x", "x"])


def test_file_not_found_suggests_a_near_name(tmp_path):
    write(tmp_path, "1,2,3\n", "probsolve.csv")
    with pytest.raises(DataError, match=r"file not found \(did you mean 'probsolve.csv'\?\)"):
        read_table(tmp_path / "probsolv.csv", NAMES)


def test_file_not_found(tmp_path):
    with pytest.raises(DataError, match="nothing.csv: file not found$"):
        read_table(tmp_path / "nothing.csv", NAMES)


def test_directory_is_not_a_data_file(tmp_path):
    with pytest.raises(DataError, match="is a folder"):
        read_table(tmp_path, NAMES)


def test_binary_file(tmp_path):
    path = write(tmp_path, b"PK\x03\x04\x00\x00binary", "data.xlsx", mode="wb")
    with pytest.raises(DataError, match="binary file"):
        read_table(path, NAMES)


def test_non_numeric_missing_code(tmp_path):
    with pytest.raises(DataError, match="missing code 'minus' is not a number"):
        read_table(write(tmp_path, "1,2,3\n"), NAMES, "minus")


# --------------------------------------------------------------------------------------------
# DataFrames


def test_dataframe_numeric_bool_and_nullable():
    df = pd.DataFrame(
        {
            "id": [1, 2, 3],
            "flag": [True, False, True],
            "n": pd.array([1, None, 3], dtype="Int64"),
            "x": [1.5, np.nan, -99.0],
            "o": pd.Series([1, None, 2.5], dtype=object),
        }
    )
    t = from_dataframe(df, missing_code=-99)
    assert t.names == ("id", "flag", "n", "x", "o")
    assert t.source == "<DataFrame>"
    assert same(t.values, [[1, 1, 1, 1.5, 1], [2, 0, nan, nan, nan], [3, 1, 3, nan, 2.5]])
    assert list(t.integer_columns) == [True, True, True, False, False]
    assert t.missing_code == -99.0


def test_dataframe_non_string_column_names():
    t = from_dataframe(pd.DataFrame({0: [1.0], 1: [2.0]}))
    assert t.names == ("0", "1")


@pytest.mark.parametrize(
    "df,fragments",
    [
        (pd.DataFrame({"a": [1, 2], "b": [1, "x"]}), ["column 2 (b)", "row 2", "'x'"]),
        (pd.DataFrame({"a": ["1", "2"]}), ["column 1 (a)", "row 1", "pd.to_numeric"]),
        (pd.DataFrame({"a": pd.to_datetime(["2020-01-01"])}), ["column 1 (a)", "datetime64"]),
        (pd.DataFrame({"a": [1.0, np.inf]}, index=["r1", "r2"]), ["row 2 (index 'r2')", "finite"]),
        (pd.DataFrame([[1, 2]], columns=["a", "a"]), ["columns 1 and 2", "'a'"]),
        (pd.DataFrame({"a": []}), ["no rows"]),
        (pd.DataFrame(), ["no columns"]),
    ],
)
def test_dataframe_errors(df, fragments):
    with pytest.raises(DataError) as info:
        from_dataframe(df)
    message = str(info.value)
    assert message.startswith("<DataFrame>")
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_dataframe_is_not_modified():
    df = pd.DataFrame({"a": [1.0, -99.0]})
    from_dataframe(df, -99)
    assert df["a"].tolist() == [1.0, -99.0]
