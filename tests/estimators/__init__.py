"""Tests of the scikit-learn style estimators (a package, so that ``test_grande.py`` here and in
``tests/models/`` do not clash)."""
