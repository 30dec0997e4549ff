"""load_csv and load_npz: headers, targets, categorical columns, missing values, bad files."""
import gzip
import os

import numpy as np
import pytest

from nograd.data import load_csv, load_npz

SHARED = "/work/shared/data"


def csv_file(tmp_path, text, name="t.csv"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


HEADED = "a,b,colour,label\n1,2.5,red,yes\n3,-1,blue,no\n5,0,red,no\n7,1e1,green,yes\n"
BARE = "1,2.5,0\n3,-1,1\n5,0,1\n7,10,2\n"


def test_header_detected_and_target_by_name(tmp_path):
    X, y, info = load_csv(csv_file(tmp_path, HEADED), "label", return_info=True)
    assert info["header"] is True
    assert info["feature_names"] == ["a", "b", "colour=blue", "colour=green", "colour=red"]
    assert info["classes"] == ["no", "yes"]
    assert y.tolist() == [1, 0, 0, 1]
    np.testing.assert_array_equal(X, [[1, 2.5, 0, 0, 1], [3, -1, 1, 0, 0], [5, 0, 0, 0, 1],
                                      [7, 10, 0, 1, 0]])
    assert X.dtype == np.float32


def test_no_header_detected_and_target_by_index(tmp_path):
    p = csv_file(tmp_path, BARE)
    X, y, info = load_csv(p, return_info=True)                 # default: the last column
    assert info["header"] is False and info["feature_names"] == ["col0", "col1"]
    assert X.shape == (4, 2) and y.tolist() == [0, 1, 1, 2]
    X0, y0 = load_csv(p, 0)
    assert y0.tolist() == [0, 1, 2, 3] and X0[:, 0].tolist() == [2.5, -1, 0, 10]
    Xn, yn = load_csv(p, -3)                                   # negative counts from the end
    np.testing.assert_array_equal(yn, y0)
    np.testing.assert_array_equal(Xn, X0)


def test_forced_header_options(tmp_path):
    p = csv_file(tmp_path, BARE)
    X, y, info = load_csv(p, header=True, return_info=True)   # the first row taken as names
    assert info["feature_names"] == ["1", "2.5"] and len(y) == 3


def test_header_over_all_categorical_columns(tmp_path):
    p = csv_file(tmp_path, "shape,class\nround,a\nsquare,b\nround,b\n")
    X, y, info = load_csv(p, "class", return_info=True)
    assert info["header"] and X.shape == (3, 2) and y.tolist() == [0, 1, 1]


def test_categorical_codes(tmp_path):
    X, y, info = load_csv(csv_file(tmp_path, HEADED), "label", categorical="codes", return_info=True)
    assert info["feature_names"] == ["a", "b", "colour"]
    assert X[:, 2].tolist() == [2, 0, 2, 1]                     # blue 0, green 1, red 2
    assert info["categorical"] == {"colour": ["blue", "green", "red"]}


def test_numeric_labels_sorted_numerically(tmp_path):
    p = csv_file(tmp_path, "x,y\n0,10\n1,9\n2,2\n3,10\n")
    X, y, info = load_csv(p, "y", return_info=True)
    assert info["classes"] == [2, 9, 10] and y.tolist() == [2, 1, 0, 2]


def test_missing_values_reported_with_count_and_columns(tmp_path):
    text = "a,b,c,label\n1,,3,x\n?,2,NA,y\n1,2,3,x\n4,5,6,y\n"
    p = csv_file(tmp_path, text)
    with pytest.raises(ValueError, match=r"3 missing values in 2 rows \(first on line 2\), in "
                                         r"columns 'a' \(1\), 'b' \(1\), 'c' \(1\); .*missing='drop'"):
        load_csv(p, "label")
    X, y, info = load_csv(p, "label", missing="drop", return_info=True)
    assert X.shape == (2, 3) and info["dropped_rows"] == 2 and y.tolist() == [0, 1]


def test_semicolon_tab_and_gzip(tmp_path):
    X1, y1 = load_csv(csv_file(tmp_path, BARE.replace(",", ";"), "s.csv"))
    X2, y2 = load_csv(csv_file(tmp_path, BARE.replace(",", "\t"), "t.tsv"))
    gz = tmp_path / "g.csv.gz"
    gz.write_bytes(gzip.compress(BARE.encode()))
    X3, y3 = load_csv(gz)
    for X, y in ((X2, y2), (X3, y3)):
        np.testing.assert_array_equal(X, X1)
        np.testing.assert_array_equal(y, y1)


@pytest.mark.parametrize("text,target,kwargs,err,match", [
    ("a,b\n1,2\n3\n", -1, {}, ValueError, r"line 3: 1 fields, expected 2"),
    ("1\n2\n", -1, {}, ValueError, "no column separator"),
    ("", -1, {}, ValueError, "holds no rows"),
    ("a,b\n", -1, {"header": True}, ValueError, "header but no data rows"),
    ("a,a\n1,2\n", -1, {}, ValueError, r"repeats column names \['a'\]"),
    (BARE, 3, {}, ValueError, r"target=3 is out of range .* 3 columns \(valid: -3\.\.2\)"),
    (BARE, -4, {}, ValueError, "out of range"),
    (BARE, "label", {}, ValueError, "has no header row"),
    (HEADED, "nope", {}, ValueError, "'nope' is not a column.*a, b, colour, label"),
    (HEADED, 1.5, {}, TypeError, "target must be a column name"),
    ("x,y\n1,0.5\n2,1.5\n", "y", {}, ValueError, "non-integer numbers"),
    ("x,y\n1,inf\n2,1\n", "x", {}, ValueError, "infinite"),
    (BARE, -1, {"categorical": "dummies"}, ValueError, "categorical must be"),
    (BARE, -1, {"missing": "mean"}, ValueError, "missing must be"),
    (BARE, -1, {"header": "yes"}, ValueError, "header must be"),
])
def test_csv_bad_input(tmp_path, text, target, kwargs, err, match):
    p = csv_file(tmp_path, text)
    before = open(p).read()
    with pytest.raises(err, match=match):
        load_csv(p, target, **kwargs)
    assert open(p).read() == before


def test_csv_bad_path(tmp_path):
    with pytest.raises(ValueError, match=r"path .*nope\.csv' does not exist"):
        load_csv(tmp_path / "nope.csv")
    bad = tmp_path / "latin.csv"
    bad.write_bytes(b"a,b\n\xe9,1\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        load_csv(bad)


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="shared data not present")
def test_real_csvs():
    X, y = load_csv(f"{SHARED}/pima_diabetes/pima-indians-diabetes.csv")
    assert X.shape == (768, 8) and np.bincount(y).tolist() == [500, 268]
    X, y, info = load_csv(f"{SHARED}/openml/ilpd/ilpd.csv", "Class", return_info=True)
    assert X.shape == (583, 11) and info["categorical"] == {"V2": ["Female", "Male"]}
    assert np.bincount(y).tolist() == [416, 167]
    X, y = load_csv(f"{SHARED}/sklearn_toy/digits.csv.gz")
    assert X.shape == (1797, 64) and len(np.unique(y)) == 10


# --------------------------------------------------------------------------- npz
def test_npz_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "s.npz"
    np.savez(p, X_train=rng.integers(0, 255, (5, 2, 3)), y_train=np.arange(5),
             X_test=rng.normal(size=(2, 2, 3)), y_test=np.array([1, 0]))
    X, y, Xt, yt = load_npz(p)
    assert X.shape == (5, 2, 3) and X.dtype == np.float32 and yt.tolist() == [1, 0]
    assert y.dtype == np.int64


@pytest.mark.parametrize("arrays,match", [
    ({"X_train": np.zeros((2, 3)), "y_train": np.zeros(2, int)}, r"\['X_test', 'y_test'\] are missing"),
    ({"X_train": np.zeros((2, 3)), "y_train": np.zeros(3, int), "X_test": np.zeros((1, 3)),
      "y_test": np.zeros(1, int)}, "X_train has 2 samples but y_train has 3"),
    ({"X_train": np.zeros((2, 3)), "y_train": np.zeros(2), "X_test": np.zeros((1, 3)),
      "y_test": np.zeros(1, int)}, "y_train must be 1-D integer"),
    ({"X_train": np.zeros((2, 3)), "y_train": np.zeros(2, int), "X_test": np.zeros((1, 4)),
      "y_test": np.zeros(1, int)}, r"X_test samples \(4,\)"),
    ({"X_train": np.full((2, 3), np.nan), "y_train": np.zeros(2, int), "X_test": np.zeros((1, 3)),
      "y_test": np.zeros(1, int)}, "NaN"),
])
def test_npz_bad_content(tmp_path, arrays, match):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(ValueError, match=match):
        load_npz(p)


def test_npz_not_an_archive_and_pickles_refused(tmp_path):
    p = tmp_path / "x.npz"
    p.write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(ValueError, match=r"x\.npz.*not a usable"):
        load_npz(p)
    q = tmp_path / "obj.npz"
    np.savez(q, X_train=np.array([{"a": 1}], dtype=object), y_train=np.zeros(1, int),
             X_test=np.zeros((1, 1)), y_test=np.zeros(1, int))
    with pytest.raises(ValueError, match="not a usable"):
        load_npz(q)
