"""Poset filters: the sixteen 4-point posets, their up-sets and names, the filter laws, gradients
away from ties, the documented tie-break, kernel = NumPy reference, the tropical composition
rules (substitution, disjoint union ↔ Minkowski sum, ordinal sum ↔ convex envelope), and the
authors' placement on the window (their 16 coefficient lists and their unit tests)."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nograd.layers import MaxPool2d, PosetPool2d
from nograd.layers.poset import Poset, enumerate_posets, four_point_posets, get_poset, up_set_table
from nograd.testing import check_adjoint, check_jvp, check_vjp
from nograd.tropical import (TropicalPolynomial, convex_hull, disjoint_union, minkowski_sum,
                             newton_polytope, ordinal_sum, ordinal_sum_polynomial, poset_polynomial,
                             product_polynomial, substitute, substitute_polynomial, tropical_eval)
from registry import poset_generic

POSETS = four_point_posets()
NAMES = [P.name for P in POSETS]


def vset(points):
    return set(map(tuple, np.rint(np.asarray(points)).astype(int).tolist()))


def labelled_posets(n):
    """Every poset on the labelled points 0..n-1 (all transitive, acyclic relations)."""
    pairs = [(a, b) for a in range(n) for b in range(n) if a != b]
    out = []
    for bits in range(1 << len(pairs)):
        rel = [p for k, p in enumerate(pairs) if bits >> k & 1]
        try:
            P = Poset(n, rel)
        except ValueError:                       # a cycle
            continue
        if len(P.relations) == len(rel):         # already transitive
            out.append(P)
    return out


def pool(P, x):
    return PosetPool2d(P).forward(x)[0]


# ---------------------------------------------------------------------- enumeration
def test_counts_of_posets_up_to_isomorphism():
    assert [len(enumerate_posets(n)) for n in range(1, 6)] == [1, 2, 5, 16, 63]   # OEIS A000112
    assert len(POSETS) == 16 and len(set(NAMES)) == 16
    assert {"antichain", "chain", "N", "diamond"} <= set(NAMES)


def test_the_sixteen_are_pairwise_non_isomorphic():
    forms = [P.canonical_form() for P in POSETS]
    assert len(set(forms)) == 16
    for P, Q in itertools.combinations(POSETS, 2):
        assert not P.is_isomorphic(Q), (P.name, Q.name)


def test_every_labelled_poset_is_isomorphic_to_exactly_one_of_the_sixteen():
    labelled = labelled_posets(4)
    assert len(labelled) == 219                                                      # OEIS A001035
    hits = np.zeros(16, dtype=int)
    for L in labelled:
        matches = [i for i, P in enumerate(POSETS) if P.is_isomorphic(L)]
        assert len(matches) == 1
        hits[matches[0]] += 1
    assert (hits > 0).all() and hits.sum() == 219
    # each class has 4!/|Aut(P)| labellings: the antichain and the chain are extreme
    assert hits[NAMES.index("antichain")] == 1 and hits[NAMES.index("chain")] == 24


def test_isomorphism_is_invariant_under_relabelling_and_duality_pairs_names():
    rng = np.random.default_rng(0)
    for P in POSETS:
        Q = P.relabel(rng.permutation(4))
        assert Q.is_isomorphic(P) and Q.canonical() == P.canonical()
    dual = {P.name: next(Q.name for Q in POSETS if Q.is_isomorphic(P.dual())) for P in POSETS}
    assert dual["claw"] == "co-claw" and dual["Y"] == "co-Y" and dual["hook"] == "co-hook"
    assert dual["vee+1"] == "wedge+1" and dual["N"] == "N" and dual["diamond"] == "diamond"
    assert all(dual[dual[n]] == n for n in NAMES)


def test_canonical_labelling_is_natural():
    for P in POSETS + tuple(enumerate_posets(5)):
        assert all(a < b for a, b in P.canonical().relations), P
    for P in enumerate_posets(4):
        assert P == P.canonical()                    # the enumeration gives canonical labellings


def test_relations_closure_covers_and_cycles():
    P = Poset(4, [(0, 1), (1, 2), (2, 3)])
    assert len(P.relations) == 6 and P.covers == ((0, 1), (1, 2), (2, 3))
    assert get_poset("diamond").covers == ((0, 1), (0, 2), (1, 3), (2, 3))
    assert get_poset("bowtie").covers == ((0, 2), (0, 3), (1, 2), (1, 3))
    with pytest.raises(ValueError, match="cycle"):
        Poset(3, [(0, 1), (1, 2), (2, 0)])
    with pytest.raises(ValueError, match="relation"):
        Poset(3, [(0, 3)])
    with pytest.raises(ValueError, match="unknown poset"):
        get_poset("pentagon")
    with pytest.raises(ValueError, match="row"):
        get_poset(16)
    assert "covers: 0<1 1<2 2<3" in get_poset("chain").hasse_diagram()


@pytest.mark.parametrize("P", POSETS, ids=NAMES)
def test_up_sets_are_the_order_polytope_vertices(P):
    ups = set(P.up_sets())
    for m in range(16):
        closed = all(not (m >> a & 1) or (m >> b & 1) for a, b in P.relations)
        assert (m in ups) == closed
    # the 0/1 points of O(P) = {v in [0,1]^4 : v_a <= v_b for a < b} are exactly the up-sets
    cube = np.array(list(itertools.product((0, 1), repeat=4)))
    inside = cube[[all(v[a] <= v[b] for a, b in P.relations) for v in cube]]
    assert vset(inside) == vset(P.vertices()) == vset(newton_polytope(P.vertices()))
    assert P.up_sets()[0] == 0 and P.up_sets()[-1] == 15


# ---------------------------------------------------------------------- the filter
def windows(rng, n):
    """``n`` random 2×2 windows as an (n, 1, 2, 2) batch; also the flat (n, 4) values."""
    x = rng.standard_normal((n, 1, 2, 2))
    return x, x.reshape(n, 4)


def test_antichain_is_a_sum_of_relus_and_chain_the_largest_suffix_sum():
    rng = np.random.default_rng(1)
    x, v = windows(rng, 200)
    np.testing.assert_allclose(pool("antichain", x).ravel(), np.maximum(v, 0).sum(1), rtol=1e-14)
    suffix = np.concatenate([np.zeros((200, 1)), np.cumsum(v[:, ::-1], axis=1)], axis=1)
    np.testing.assert_allclose(pool("chain", x).ravel(), suffix.max(1), rtol=1e-14)


@pytest.mark.parametrize("P", POSETS, ids=NAMES)
def test_filter_is_the_tropical_polynomial_and_convex_homogeneous_nonnegative(P):
    rng = np.random.default_rng(2)
    x, v = windows(rng, 300)
    y = pool(P, x).ravel()
    np.testing.assert_allclose(y, poset_polynomial(P)(v), rtol=1e-14)
    assert (y >= 0).all()
    for a in (0.5, 3.0):
        np.testing.assert_allclose(pool(P, a * x).ravel(), a * y, rtol=1e-13, atol=1e-15)
    x2, _ = windows(rng, 300)
    t = rng.uniform(size=(300, 1, 1, 1))
    mixed = pool(P, t * x + (1 - t) * x2).ravel()
    assert (mixed <= t.ravel() * y + (1 - t.ravel()) * pool(P, x2).ravel() + 1e-12).all()
    # after a ReLU every filter is sum pooling: the whole window is an up-set
    pos = np.abs(x)
    np.testing.assert_allclose(pool(P, pos).ravel(), pos.reshape(300, 4).sum(1), rtol=1e-14)


def test_odd_sizes_are_zero_padded():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 5, 7))
    y = pool("N", x)
    assert y.shape == (2, 3, 3, 4)
    padded = np.zeros((2, 3, 6, 8))
    padded[:, :, :5, :7] = x
    np.testing.assert_array_equal(y, pool("N", padded))
    assert PosetPool2d("chain").output_shape((1, 1, 1, 1)) == (1, 1, 1, 1)


def test_ties_go_to_the_smallest_up_set():
    layer = PosetPool2d("chain")                 # up-sets {}, {3}, {2,3}, {1,2,3}, {0,1,2,3}
    x = np.array([[[[0.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]]])
    y, cache = layer.forward(x)
    np.testing.assert_array_equal(y.ravel(), [1.0, 0.0])
    np.testing.assert_array_equal(cache[0].ravel(), [8, 0])      # {3} beats its equal supersets
    dx, _ = layer.backward(cache, np.ones_like(y))
    np.testing.assert_array_equal(dx, [[[[0, 0], [0, 1]], [[0, 0], [0, 0]]]])


def test_more_inputs_get_gradient_than_with_max_pooling():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 3, 8, 8))
    counts = {}
    for name in ("antichain", "N", "chain"):
        layer = PosetPool2d(name)
        y, c = layer.forward(x)
        counts[name] = int(np.count_nonzero(layer.backward(c, np.ones_like(y))[0]))
    mp = MaxPool2d(2)
    y, c = mp.forward(x)
    n_max = int(np.count_nonzero(mp.backward(c, np.ones_like(y))[0]))
    assert n_max == y.size
    assert counts["antichain"] == int((x > 0).sum())
    assert all(n > n_max for n in counts.values()), (counts, n_max)


@pytest.mark.parametrize("P", POSETS, ids=NAMES)
def test_gradients_away_from_ties(P):
    layer = PosetPool2d(P)
    for shape in ((2, 4, 6), (1, 5, 3)):            # even: the unpadded fast paths; odd: padding
        x = poset_generic(shape)(np.random.default_rng(5), 2, np.float64, layer)
        assert check_vjp(layer, x) < 1e-6
        assert check_jvp(layer, x) < 1e-6
        assert check_adjoint(layer, x) < 1e-10


def test_constructor_errors():
    with pytest.raises(TypeError, match="poset"):
        PosetPool2d(3)
    with pytest.raises(ValueError, match="kernel_size"):
        PosetPool2d(Poset(6))
    with pytest.raises(ValueError, match="positions"):
        PosetPool2d("N", kernel_size=3)
    layer = PosetPool2d(Poset(9, [(0, 4), (4, 8)]), kernel_size=3)
    assert layer.forward(np.ones((1, 1, 7, 7)))[0].shape == (1, 1, 3, 3)


# ---------------------------------------------------------------------- kernel = reference
@st.composite
def case(draw):
    if draw(st.booleans()):                      # the unrolled 2×2 stride-2 path, odd sizes too
        P = POSETS[draw(st.integers(0, 15))]
        KH = KW = sh = sw = 2
    else:                                        # the table path: any window, any stride
        KH, KW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        n = KH * KW
        pairs = [(a, b) for a in range(n) for b in range(a + 1, n)]
        rel = draw(st.lists(st.sampled_from(pairs), max_size=6)) if pairs else []
        perm = draw(st.permutations(range(n)))
        P = Poset(n, rel).relabel(perm)
        sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    return P, (KH, KW), (sh, sw), shape, draw(st.integers(0, 2**31))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(case(), st.sampled_from([np.float32, np.float64]), st.booleans())
def test_kernels_match_the_reference(c, dtype, integer):
    from nograd.kernels import poset as K
    from nograd.kernels import poset_ref as R
    P, (KH, KW), (sh, sw), shape, seed = c
    layer = PosetPool2d(P, (sh, sw), kernel_size=(KH, KW))
    rng = np.random.default_rng(seed)
    # small integers make many ties (the tie-break must agree); normals exercise float sums
    x = (rng.integers(-3, 4, shape) if integer else rng.standard_normal(shape)).astype(dtype)
    out = layer.output_shape(shape)
    geo = (KH, KW, sh, sw)
    ya, yb = np.full(out, np.nan, dtype), np.full(out, np.nan, dtype)
    aa, ab = np.zeros(out, layer._arg_dtype), np.zeros(out, layer._arg_dtype)
    K.posetpool_forward(x, *geo, out[2], out[3], *layer._table, ya, aa)
    R.posetpool_forward(x, *geo, out[2], out[3], *layer._table, yb, ab)
    np.testing.assert_array_equal(ya, yb)
    np.testing.assert_array_equal(aa, ab)
    dy = rng.integers(-4, 5, out).astype(dtype)            # integers: exact in any summation order
    np.testing.assert_array_equal(K.posetpool_backward(dy, aa, *geo, np.full(shape, np.nan, dtype)),
                                  R.posetpool_backward(dy, aa, *geo, np.full(shape, np.nan, dtype)))
    d = rng.standard_normal(shape).astype(dtype)
    np.testing.assert_array_equal(K.posetpool_jvp(d, aa, *geo, np.empty(out, dtype)),
                                  R.posetpool_jvp(d, aa, *geo, np.empty(out, dtype)))
    # the filter value is the sum over the recorded up-set (the jvp along x itself)
    np.testing.assert_allclose(K.posetpool_jvp(x, aa, *geo, np.empty(out, dtype)), ya,
                               rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)


def test_table_sums_every_set_lowest_position_first():
    for P in POSETS:
        elem, parent, cand, masks = up_set_table(P)
        assert sorted(masks[cand].tolist()) == sorted(P.up_sets())
        assert list(masks[cand]) == list(P.up_sets())              # the tie-break order
        for k in range(1, len(masks)):
            assert parent[k] < k and masks[parent[k]] | (1 << elem[k]) == masks[k]
            assert masks[k] & ((1 << int(elem[k])) - 1) == 0       # elem is the lowest position


# ---------------------------------------------------------------------- tropical tools
def test_tropical_product_and_sum_follow_minkowski_sum_and_convex_hull():
    rng = np.random.default_rng(6)
    for _ in range(5):
        f = TropicalPolynomial(rng.integers(0, 3, (4, 3)), rng.normal(size=4))
        g = TropicalPolynomial(rng.integers(0, 3, (3, 3)), rng.normal(size=3))
        x = rng.normal(size=(50, 3))
        np.testing.assert_allclose(f.otimes(g)(x), f(x) + g(x), rtol=1e-12)
        np.testing.assert_allclose(f.oplus(g)(x), np.maximum(f(x), g(x)), rtol=1e-12)
        assert vset(f.otimes(g).newton_polytope()) == vset(minkowski_sum(f.newton_polytope(),
                                                                         g.newton_polytope()))
        assert vset(f.oplus(g).newton_polytope()) == vset(convex_hull(f.exponents, g.exponents))
    x = rng.normal(size=(7, 2))
    np.testing.assert_allclose(tropical_eval([[1, 0], [0, 1]], x, [0.0, -1.0]),
                               np.maximum(x[:, 0], x[:, 1] - 1))
    square = [[0, 0], [2, 0], [0, 2], [2, 2], [1, 1], [1, 0]]
    assert vset(newton_polytope(square)) == {(0, 0), (2, 0), (0, 2), (2, 2)}
    with pytest.raises(ValueError, match="variables"):
        tropical_eval([[1, 0]], np.zeros(3))


SMALL = [P for n in (1, 2, 3) for P in enumerate_posets(n)]


@pytest.mark.parametrize("P", SMALL, ids=[repr(P) for P in SMALL])
def test_substitution_rule_gives_the_composed_posets_polynomial(P):
    rng = np.random.default_rng(7)
    for Q in SMALL:
        for p in range(P.n):
            C = substitute(P, p, Q)
            g = substitute_polynomial(P, p, poset_polynomial(Q))
            assert vset(g.exponents) == vset(C.vertices()), (P, p, Q)
            x = rng.normal(size=(20, C.n))
            np.testing.assert_allclose(g(x), poset_polynomial(C)(x), rtol=1e-12)


def test_disjoint_union_is_a_minkowski_sum_and_ordinal_sum_a_convex_envelope():
    for P, Q in itertools.product(SMALL, repeat=2):
        n, m = P.n, Q.n
        fP, fQ = poset_polynomial(P), poset_polynomial(Q)
        D, O = disjoint_union(P, Q), ordinal_sum(P, Q)
        assert D.is_isomorphic(substitute(substitute(Poset(2), 1, Q), 0, P))
        assert O.is_isomorphic(substitute(substitute(Poset(2, [(0, 1)]), 1, Q), 0, P))
        assert vset(product_polynomial(fP, fQ).exponents) == vset(D.vertices())
        assert vset(ordinal_sum_polynomial(fP, fQ).exponents) == vset(O.vertices())
        mink = minkowski_sum(fP.embed(range(n), n + m).exponents, fQ.embed(range(n, n + m), n + m).exponents)
        assert vset(mink) == vset(newton_polytope(D.vertices()))
        lifted = np.hstack([P.vertices(), np.ones((len(P.vertices()), m))])
        low = np.hstack([np.zeros((len(Q.vertices()), n)), Q.vertices()])
        assert vset(convex_hull(lifted, low)) == vset(newton_polytope(O.vertices()))


def test_composed_filters_match_the_composed_poset_filters():
    """On 2×2 windows, row 0 = points 0, 1 and row 1 = points 2, 3: the filter of P ⊔ Q is the
    sum of the 1×2 filters of P and Q on the rows; that of P ⊕ Q is max(f_P(row 0) + Σ row 1, f_Q(row 1))."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 2, 4, 6))
    two = enumerate_posets(2)
    for P, Q in itertools.product(two, repeat=2):
        fP = PosetPool2d(P, (2, 2), kernel_size=(1, 2))(x)             # rows 0, 2
        fQ = PosetPool2d(Q, (2, 2), kernel_size=(1, 2))(x[:, :, 1:])   # rows 1, 3
        row1 = x[:, :, 1::2, 0::2] + x[:, :, 1::2, 1::2]
        np.testing.assert_allclose(PosetPool2d(disjoint_union(P, Q))(x), fP + fQ, rtol=1e-13)
        np.testing.assert_allclose(PosetPool2d(ordinal_sum(P, Q))(x), np.maximum(fP + row1, fQ),
                                   rtol=1e-13)


# ---------------------------------------------------------------------- in a network
def test_a_cnn_with_poset_pooling_learns_digits():
    from nograd import Adam, Backprop, Sequential
    from nograd.data import load_digits
    from nograd.layers import Conv2d, Flatten, Linear
    X, y, Xt, yt = load_digits(flatten=False)
    rng = np.random.default_rng(0)
    net = Sequential(Conv2d(1, 8, 3, padding=1, rng=rng), PosetPool2d("N"), Flatten(),
                     Linear(8 * 16, 10, rng=rng))
    opt, rule = Adam(net.params, lr=3e-3), Backprop()
    before = float(np.mean(net(Xt).argmax(1) == yt))
    for epoch in range(3):
        order = rng.permutation(len(y))
        for i in range(0, len(y), 64):
            b = order[i:i + 64]
            grads, _ = rule.grads(net, X[b], y[b], rng=rng)
            opt.step(grads)
    after = float(np.mean(net(Xt).argmax(1) == yt))
    assert after > 0.85 and after > before + 0.5, (before, after)


def _run(script, *args):
    import json
    import os
    import subprocess
    import sys
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    out = subprocess.run([sys.executable, os.path.join(root, script), *args, "--json"], env=env,
                         capture_output=True, text=True, timeout=300, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_example_ends_with_one_json_line():
    res = _run("examples/poset_pooling.py", "--seeds", "1", "--epochs", "1", "--train-size", "300",
               "--placement", "pool-relu")
    assert res["n_posets"] == 16
    assert set(res["accuracy"]) == {"max", "avg", "mixed"} | set(NAMES)
    assert all(0.0 <= a <= 1.0 for a in res["accuracy"].values())


def test_benchmark_reports_the_ratio_to_max_pooling():
    res = _run("bench/poset_pool.py", "--shape", "2,3,8,10", "--repeats", "2")
    assert res["posetpool_over_maxpool"] > 0 and res["slowest_poset"] in NAMES
    assert len(res["posetpool_over_maxpool_by_poset"]) == 16


# ---------------------------------------------------------------------- the authors' placement
# The 16 coefficient lists of the authors' code, ``dict_posets`` in poset_utils.py of
# https://github.com/mendozacortesgroup/Poset-filters (commits 58f0fcb and c110f49; the lines left
# commented out there are omitted). A tuple (a, b, c, d) is the term a·x0 + b·x1 + c·x2 + d·x3 of a
# 2×2 window read row-major (their ``unfold(2, 2, 2).unfold(3, 2, 2)``): 0 1 / 2 3. The key is the
# row of the paper's table of posets (arXiv:2412.06097); their README names 1 the antichain (the
# cube), 13 the 4-chain (the simplex), and ``filter_n`` is list 12.
AUTHORS_LISTS = {
    0: [(0, 0, 0, 0), (0, 0, 0, 1), (1, 0, 0, 1), (0, 1, 0, 1), (0, 0, 1, 1), (1, 1, 0, 1), (1, 0, 1, 1),
        (0, 1, 1, 1), (1, 1, 1, 1)],
    1: [(0, 0, 0, 0), (1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1), (1, 1, 0, 0), (1, 0, 1, 0),
        (1, 0, 0, 1), (0, 1, 1, 0), (0, 1, 0, 1), (0, 0, 1, 1), (1, 1, 1, 0), (1, 1, 0, 1), (1, 0, 1, 1),
        (0, 1, 1, 1), (1, 1, 1, 1)],
    2: [(0, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1), (1, 1, 0, 0), (0, 1, 1, 0), (0, 1, 0, 1),
        (0, 0, 1, 1), (1, 1, 1, 0), (1, 1, 0, 1), (0, 1, 1, 1), (1, 1, 1, 1)],
    3: [(0, 0, 0, 0), (0, 0, 0, 1), (0, 0, 1, 1), (1, 0, 1, 1), (0, 1, 1, 1), (1, 1, 1, 1)],
    4: [(0, 0, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1), (1, 0, 1, 0), (0, 1, 1, 0), (0, 0, 1, 1), (1, 1, 1, 0),
        (1, 0, 1, 1), (0, 1, 1, 1), (1, 1, 1, 1)],
    5: [(0, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1), (0, 1, 1, 0), (0, 1, 0, 1), (0, 0, 1, 1),
        (1, 1, 1, 0), (0, 1, 1, 1), (1, 1, 1, 1)],
    6: [(0, 0, 0, 0), (0, 1, 0, 0), (0, 0, 0, 1), (1, 1, 0, 0), (0, 1, 0, 1), (0, 0, 1, 1), (1, 1, 0, 1),
        (0, 1, 1, 1), (1, 1, 1, 1)],
    7: [(0, 0, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1), (0, 0, 1, 1), (0, 1, 1, 1), (1, 1, 1, 1)],
    8: [(0, 0, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1), (0, 1, 1, 0), (0, 0, 1, 1), (1, 1, 1, 0), (0, 1, 1, 1),
        (1, 1, 1, 1)],
    9: [(0, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1), (0, 1, 1, 0), (0, 1, 0, 1), (0, 0, 1, 1),
        (0, 1, 1, 1), (1, 1, 1, 1)],
    10: [(0, 0, 0, 0), (0, 1, 0, 0), (0, 0, 0, 1), (0, 1, 0, 1), (0, 0, 1, 1), (0, 1, 1, 1), (1, 1, 1, 1)],
    11: [(0, 0, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1), (0, 0, 1, 1), (1, 0, 1, 1), (0, 1, 1, 1), (1, 1, 1, 1)],
    12: [(0, 0, 0, 0), (0, 0, 0, 1), (0, 1, 0, 0), (0, 1, 0, 1), (1, 1, 0, 0), (0, 1, 1, 1), (1, 1, 0, 1),
         (1, 1, 1, 1)],
    13: [(0, 0, 0, 0), (0, 0, 0, 1), (0, 0, 1, 1), (0, 1, 1, 1), (1, 1, 1, 1)],
    14: [(0, 0, 0, 0), (0, 0, 0, 1), (0, 1, 0, 1), (0, 0, 1, 1), (0, 1, 1, 1), (1, 1, 1, 1)],
    15: [(0, 0, 0, 0), (0, 0, 0, 1), (0, 1, 0, 1), (0, 0, 1, 1), (1, 0, 1, 1), (0, 1, 1, 1), (1, 1, 1, 1)],
}
# nograd's name of each list (isomorphism classes read off the lists by hand: e.g. list 10 has
# 0 < 1 and the chain 0 < 2 < 3, a 3-chain with a point above its bottom, "hook")
AUTHORS_NAMES = {0: "co-claw", 1: "antichain", 2: "2+1+1", 3: "co-Y", 4: "wedge+1", 5: "vee+1", 6: "2+2",
                 7: "Y", 8: "3-chain+1", 9: "claw", 10: "hook", 11: "bowtie", 12: "N", 13: "chain",
                 14: "diamond", 15: "co-hook"}


def authors_filter(coeffs, v):
    """Their forward pass on flat windows ``v (m, 4)``: the max over the listed linear forms."""
    return (v @ np.array(coeffs, dtype=float).T).max(axis=1)


@pytest.mark.parametrize("row", range(16))
def test_placement_on_the_window_is_the_authors(row):
    coeffs = AUTHORS_LISTS[row]
    masks = {sum(int(c) << i for i, c in enumerate(t)) for t in coeffs}
    assert len(masks) == len(coeffs)
    P = get_poset(AUTHORS_NAMES[row])
    assert set(P.up_sets()) == masks, (row, P.name, P.covers)
    # the filter equals their forward pass: the max over their linear forms, on signed windows
    x, v = windows(np.random.default_rng(100 + row), 500)
    np.testing.assert_allclose(pool(P.name, x).ravel(), authors_filter(coeffs, v), rtol=1e-14, atol=1e-15)
    assert get_poset(row) == P and get_poset(row).name == AUTHORS_NAMES[row]    # by their row number


def test_the_authors_unit_tests_of_filter_n():
    """The inputs and expected outputs of the authors' tests of ``filter_n`` (list 12, "N"):
    test/test.py and test/test_pytorch.py of mendozacortesgroup/Poset-filters (commits 2316bb8,
    3302334): forward on a 5×5 input (zero-padded) and on an 8×8 one, and the gradient of the sum
    of the outputs on the 8×8 one."""
    x = np.zeros((1, 4, 5, 5))
    x[0, 0, 0::2, 0::2] = 1
    x[0, 1:] = 1
    x[0, 2, 1::2, :] = -1
    x[0, 3, :, 0::2] = -1
    expected = [[[1, 1, 1], [1, 1, 1], [1, 1, 1]], [[4, 4, 2], [4, 4, 2], [2, 2, 1]],
                [[2, 2, 1], [2, 2, 1], [2, 2, 1]], [[2, 2, 0], [2, 2, 0], [1, 1, 0]]]
    np.testing.assert_array_equal(pool("N", x)[0], expected)
    x = np.ones((1, 3, 8, 8))
    x[0, 0, 0::2, 0::2] = -1
    x[0, 1, 0::2, :] = -1
    x[0, 2, 1::2, :] = -1
    x[0, 2, :, 0::2] = -1
    layer = PosetPool2d("N")
    y, cache = layer.forward(x)
    np.testing.assert_array_equal(y[0], np.array([3.0, 1.0, 1.0])[:, None, None] * np.ones((3, 4, 4)))
    dx, _ = layer.backward(cache, np.ones_like(y))
    # per 2×2 window: channel 0 (0 1 / 1 1), channel 1 (0 0 / 0 1), channel 2 (0 1 / 0 0)
    tiles = [[[0, 1], [1, 1]], [[0, 0], [0, 1]], [[0, 1], [0, 0]]]
    np.testing.assert_array_equal(dx[0], np.stack([np.tile(t, (4, 4)) for t in tiles]))


def test_canonical_form_is_the_largest_code_over_natural_labellings():
    """The definition in :meth:`Poset.canonical_form`, written out by brute force: over every
    relabelling that makes the order natural (a < b ⇒ label a < label b), the code reads the bits
    ``a < b`` for the label pairs (0,1), (0,2), (0,3), (1,2), (1,3), (2,3), first most significant;
    the form is the largest code, and :meth:`Poset.canonical` is a relabelling that reaches it."""
    pairs = list(itertools.combinations(range(4), 2))
    for L in labelled_posets(4):
        codes = []
        for perm in itertools.permutations(range(4)):
            if all(perm[a] < perm[b] for a, b in L.relations):
                new = {(perm[a], perm[b]) for a, b in L.relations}
                codes.append(int("".join("1" if p in new else "0" for p in pairs), 2))
        C = L.canonical()
        assert L.canonical_form() == (4, max(codes))
        assert C.is_isomorphic(L) and all(a < b for a, b in C.relations)
        assert int("".join("1" if C.less[p] else "0" for p in pairs), 2) == max(codes)
