"""Unit tests for common.tsvm (Joachims 1999 TSVM) and profiles.tsvm_errors (M1+TSVM), on small
seeded synthetic problems; each runs in well under a second on one thread."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.svm import SVC

from common import profiles
from common import tsvm as T
from common.kingma import labelled_subsets


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest: tiny problems, one thread


def tilted_clusters(seed: int, n: int = 200):
    """Two clusters at x = -2 (+1) and x = +2 (-1), narrow in x (std 0.4) and long in y (std 2),
    so a wide vertical gap separates them. The labelled points (-2, 2) and (2, -2) sit at opposite
    ends: the inductive SVM's boundary is their bisector y = x, which cuts off the part of each
    cluster beyond |y| > 2 (about 16 % of the points by the Gaussian tail), while the gap holds
    no point: the TSVM's large-margin solution over the unlabelled points is the vertical gap."""
    rng = np.random.default_rng(seed)
    blob = lambda cx: np.c_[rng.normal(cx, 0.4, n), rng.normal(0.0, 2.0, n)]
    x_u = np.r_[blob(-2.0), blob(2.0)]
    y_u = np.r_[np.ones(n, dtype=int), -np.ones(n, dtype=int)]
    x_l, y_l = np.array([[-2.0, 2.0], [2.0, -2.0]]), np.array([1, -1])
    return x_l, y_l, x_u, y_u


@pytest.mark.parametrize("kernel", ["rbf", "linear"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tsvm_beats_inductive_svm_on_tilted_clusters(kernel, seed):
    x_l, y_l, x_u, y_u = tilted_clusters(seed)
    gamma = T.scale_gamma(np.r_[x_l, x_u])
    svc = SVC(C=10.0, kernel=kernel, gamma=gamma).fit(x_l, y_l)
    svc_error = float((svc.predict(x_u) != y_u).mean())
    res = T.tsvm_binary(x_l, y_l, x_u, kernel=kernel)
    tsvm_error = float((res.labels != y_u).mean())
    assert svc_error > 0.10, svc_error                       # the construction's premise
    assert tsvm_error < 0.02, (tsvm_error, svc_error)
    assert tsvm_error < svc_error - 0.08
    assert res.switches > 0                                  # the switching did the work
    # the final machine's own predictions agree with the transductive labels
    assert float((res.predict(x_u) != y_u).mean()) < 0.02
    assert (res.labels == 1).sum() == res.num_pos == 200


def test_joachims_one_pair_rule_also_finds_the_gap():
    x_l, y_l, x_u, y_u = tilted_clusters(0)
    many = T.tsvm_binary(x_l, y_l, x_u, kernel="linear")
    one = T.tsvm_binary(x_l, y_l, x_u, kernel="linear", max_pairs=1)
    assert float((one.labels != y_u).mean()) < 0.02
    assert one.n_fits > many.n_fits                          # one pair per retraining costs more
    assert one.capped_levels == 0 and many.capped_levels == 0


def test_a_switch_that_raises_the_objective_is_undone(monkeypatch):
    """The descent check: a (planted) switch of the two most confidently labelled points must
    raise the retrained objective, so it is undone and the level ends."""
    x_l, y_l, x_u, _ = tilted_clusters(0, n=50)
    good = T.tsvm_binary(x_l, y_l, x_u, kernel="linear", c_star_start=1.0)

    def bad_switch(labels, slack, max_pairs=None):
        pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == -1)
        out = labels.copy()
        out[pos[np.argmin(slack[pos])]], out[neg[np.argmin(slack[neg])]] = -1, 1
        return out, 1

    monkeypatch.setattr(T, "switch_pairs", bad_switch)
    res = T.tsvm_binary(x_l, y_l, x_u, kernel="linear", c_star_start=1.0)
    assert res.levels == good.levels == 5                     # C* = 1, 2, 4, 8, 10
    assert res.reverted == res.levels and res.switches == 0 and good.reverted == 0
    assert (res.labels == 1).sum() == 50


def test_annealing_schedule_follows_figure_2():
    x_l, y_l, x_u, _ = tilted_clusters(0, n=50)
    res = T.tsvm_binary(x_l, y_l, x_u, kernel="linear", num_pos=20, C=4.0)
    c_neg = [h["c_neg"] for h in res.history]
    c_pos = [h["c_pos"] for h in res.history]
    assert c_neg[0] == pytest.approx(1e-5) and c_pos[0] == pytest.approx(1e-5 * 20 / 80)
    assert c_neg[1] == pytest.approx(2e-5) and c_pos[1] == pytest.approx(2 * 1e-5 * 20 / 80)
    assert c_neg[-1] == c_pos[-1] == 4.0                      # the last level at C* = C
    assert all(b <= 2 * a + 1e-12 for a, b in zip(c_pos, c_pos[1:]))
    assert (res.labels == 1).sum() == 20


def test_decision_function_matches_sklearn():
    x_l, y_l, x_u, _ = tilted_clusters(3, n=30)
    for limit in (0, T.GRAM_LIMIT):                           # computed kernels and the Gram matrix
        m = T._Machine(np.r_[x_l, x_u], "rbf", "scale", 10.0, limit, 1e-3)
        svc = m.fit(y_l, None, 2)
        ref = SVC(C=10.0, kernel="rbf", gamma=m.gamma).fit(x_l, y_l)
        at = slice(2, 2 + len(x_u))
        np.testing.assert_allclose(m.decision(svc, rows=at), ref.decision_function(x_u), atol=1e-6)
        np.testing.assert_allclose(m.decision(svc, x=x_u), ref.decision_function(x_u), atol=1e-6)
        # per-point costs C * weight on all points: the same machine as SVC with sample_weight
        y_all = np.r_[y_l, np.where(x_u[:, 0] < 0, 1, -1)]
        w = np.r_[1.0, 1.0, np.where(y_all[2:] > 0, 0.3, 0.05)]
        full = m.fit(y_all, w)
        ref = SVC(C=10.0, kernel="rbf", gamma=m.gamma).fit(m.x, y_all, sample_weight=w)
        np.testing.assert_allclose(m.decision(full, rows=at), ref.decision_function(x_u), atol=1e-5)


# --------------------------------------------------------------------------- label switching
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("max_pairs", [None, 1, 3])
def test_switching_preserves_positives_and_lowers_the_loss(seed, max_pairs):
    rng = np.random.default_rng(seed)
    f = rng.normal(0.0, 1.5, 300)                             # decision values at a fixed (w, b)
    labels = T.initial_labels(rng.normal(size=300), 90)       # labels that disagree with f
    slack = T.hinge_slack(labels, f)
    new, n = T.switch_pairs(labels, slack, max_pairs)
    assert (new == 1).sum() == (labels == 1).sum() == 90
    assert n > 0 and (max_pairs is None or n <= max_pairs)
    changed = np.flatnonzero(new != labels)
    assert len(changed) == 2 * n
    m, l = changed[labels[changed] == 1], changed[labels[changed] == -1]
    assert len(m) == len(l) == n
    assert (slack[changed] > 0).all()
    # every swapped pair satisfies Joachims' condition; with equal costs the hinge loss at the
    # fixed (w, b) drops (Joachims 1999), and the one-pair rule takes the pair of largest slacks
    assert slack[m].sum() + slack[l].sum() > 2 * n
    assert T.hinge_slack(new, f).sum() < slack.sum()
    if max_pairs == 1:
        assert slack[m[0]] == slack[labels == 1].max() and slack[l[0]] == slack[labels == -1].max()
    # no qualifying pair is left out among the swapped ranks: the next pair fails the test
    again, _ = T.switch_pairs(new, T.hinge_slack(new, f), None)
    assert (again == 1).sum() == 90


def test_no_switch_when_labels_agree_with_scores():
    f = np.linspace(-3, 3, 50)
    labels = T.initial_labels(f, 25)                          # the top 25 scores are +1
    new, n = T.switch_pairs(labels, T.hinge_slack(labels, f))
    assert n == 0 and (new == labels).all()
    assert (labels[np.argsort(f)[-25:]] == 1).all() and (labels == 1).sum() == 25


# --------------------------------------------------------------------------- one-vs-rest
def three_clusters(seed: int, n: int = 120):
    rng = np.random.default_rng(seed)
    centres = 3.0 * np.array([[np.cos(a), np.sin(a)] for a in (0.0, 2.1, 4.2)])
    x_u = np.concatenate([c + rng.normal(0, 0.6, (n, 2)) for c in centres])
    y_u = np.repeat(np.arange(3), n)
    # two labels per class, both off-centre on the same tangential side of their cluster
    tangents = np.array([[-np.sin(a), np.cos(a)] for a in (0.0, 2.1, 4.2)])
    x_l = np.concatenate([[c + 1.2 * t, c + 0.6 * t] for c, t in zip(centres, tangents)])
    y_l = np.repeat(np.arange(3), 2)
    return x_l, y_l, x_u, y_u


@pytest.mark.parametrize("seed", [0, 1])
def test_one_vs_rest_on_three_clusters(seed):
    x_l, y_l, x_u, y_u = three_clusters(seed)
    model = T.tsvm_ovr(x_l, y_l, x_u)
    assert model.decision_u.shape == (len(x_u), 3)
    np.testing.assert_allclose(model.prior, [1 / 3] * 3)
    assert [int((m.labels == 1).sum()) for m in model.machines] == [120] * 3   # num+ per class
    assert float((model.labels != y_u).mean()) < 0.03
    assert float((model.predict(x_u) != y_u).mean()) < 0.03
    # an imbalanced given prior changes num+ of each binary problem accordingly
    skew = T.tsvm_ovr(x_l, y_l, x_u, class_prior=[0.5, 0.25, 0.25], kernel="linear")
    assert [int((m.labels == 1).sum()) for m in skew.machines] == [180, 90, 90]
    uni = T.tsvm_ovr(x_l, np.array([0, 0, 0, 0, 1, 2]), x_u, class_prior="uniform", kernel="linear")
    np.testing.assert_allclose(uni.prior, [1 / 3] * 3)
    assert [m.num_pos for m in uni.machines] == [120] * 3


def test_labelled_prior_is_the_labelled_class_fractions():
    x_l, _, x_u, _ = three_clusters(0)
    y_l = np.array([0, 0, 0, 0, 1, 2])
    model = T.tsvm_ovr(x_l, y_l, x_u, kernel="linear")
    np.testing.assert_allclose(model.prior, [4 / 6, 1 / 6, 1 / 6])
    assert [m.num_pos for m in model.machines] == [240, 60, 60]


# --------------------------------------------------------------------------- bad input
def test_bad_input_raises_value_errors():
    x_l, y_l, x_u, _ = tilted_clusters(0, n=20)
    with pytest.raises(ValueError, match="y_l must be 1-D"):
        T.tsvm_binary(x_l, np.array([1, -1, 1]), x_u)
    with pytest.raises(ValueError, match="x_u must be 2-D"):
        T.tsvm_binary(x_l, y_l, x_u[:, :1])
    with pytest.raises(ValueError, match="x_l must be 2-D"):
        T.tsvm_binary(x_l[0], y_l, x_u)
    with pytest.raises(ValueError, match="unknown kernel 'poly'"):
        T.tsvm_binary(x_l, y_l, x_u, kernel="poly")
    with pytest.raises(ValueError, match="unknown kernel"):
        T.tsvm_ovr(x_l, np.array([0, 1]), x_u, kernel="sigmoid")
    with pytest.raises(ValueError, match="labels -1 and \\+1"):
        T.tsvm_binary(x_l, np.array([1, 1]), x_u)
    with pytest.raises(ValueError, match="gamma must be 'scale'"):
        T.tsvm_binary(x_l, y_l, x_u, gamma="auto")
    with pytest.raises(ValueError, match="C_star must be > 0"):
        T.tsvm_binary(x_l, y_l, x_u, C_star=0.0)
    with pytest.raises(ValueError, match="num_pos must be in 1"):
        T.tsvm_binary(x_l, y_l, x_u, num_pos=len(x_u))
    with pytest.raises(ValueError, match="classes \\[1\\] have no labelled point"):
        T.tsvm_ovr(x_l, np.array([0, 2]), x_u)
    with pytest.raises(ValueError, match="classes \\[2\\] have no labelled point"):
        T.tsvm_ovr(x_l, np.array([0, 1]), x_u, n_classes=3)
    with pytest.raises(ValueError, match="class_prior must be 2 positive fractions"):
        T.tsvm_ovr(x_l, np.array([0, 1]), x_u, class_prior=[0.9, 0.3])
    with pytest.raises(ValueError, match="labels and slack"):
        T.switch_pairs(np.array([1, -1]), np.array([0.5]))
    with pytest.raises(ValueError, match="seeds must give one seed per draw"):
        T.feature_tsvm_errors(torch.zeros(10, 2), torch.arange(10) % 2, torch.tensor([[0, 1]]),
                              torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), seeds=[0, 1])


# --------------------------------------------------------------------------- M1+TSVM
def feature_set(seed: int = 0, n_per_class: int = 90, dim: int = 10):
    """Ten Gaussian classes (centres 3 apart on the axes of R^10, noise 0.5), each stretched
    (std 3) along its own random direction, so that two labels per class often sit far out on
    the stretch and place the inductive boundary badly; every third point is the test set."""
    g = np.random.default_rng(seed)
    x, y = [], []
    for c in range(10):
        stretch = g.normal(size=dim)
        stretch /= np.linalg.norm(stretch)
        x.append(3.0 * np.eye(10, dim)[c] + 0.5 * g.normal(size=(n_per_class, dim))
                 + 3.0 * g.normal(size=(n_per_class, 1)) * stretch)
        y.append(np.full(n_per_class, c))
    x, y = torch.tensor(np.concatenate(x)).float(), torch.tensor(np.concatenate(y))
    test = torch.arange(len(y)) % 3 == 0
    return x[~test], y[~test], x[test], y[test]


def test_tsvm_errors_mirror_svc_errors_and_use_the_unlabelled_points():
    f_train, y_train, f_test, y_test = feature_set()
    draws = [0, 1, 2]
    errors, seconds = profiles.tsvm_errors(f_train, y_train, f_test, y_test, [20], draws,
                                           n_unlabelled=300)
    svc, _ = profiles.svc_errors(f_train, y_train, f_test, y_test, [20], draws)
    assert set(errors) == set(seconds) == {20} and len(errors[20]) == 3
    assert all(0 <= e <= 100 for e in errors[20])
    # the same labelled draws and seeded unlabelled subsample as a direct call (deterministic)
    lab = labelled_subsets(y_train, 20, draws)
    direct, info = T.feature_tsvm_errors(f_train, y_train, lab, f_test, y_test,
                                         n_unlabelled=300, seeds=draws)
    assert direct == errors[20]
    assert all(i["n_unlabelled"] == 300 and i["fits"] > 0 and i["switches"] > 0 for i in info)
    # with 2 labels per class the inductive SVC errs on about a fifth of the test points; the
    # TSVM, same kernel and C, does better on every draw (seeded: 9-16 % against 19-22 %)
    assert min(svc[20]) > 10.0
    assert all(t < s - 2.0 for t, s in zip(errors[20], svc[20])), (errors[20], svc[20])
    assert np.mean(errors[20]) < np.mean(svc[20]) - 4.0


def test_unlabelled_subset_is_seeded_and_excludes_labelled():
    lab = np.array([3, 7, 11])
    a = T.unlabelled_subset(100, lab, 20, seed=5)
    assert len(a) == 20 and not np.isin(lab, a).any() and (np.diff(a) > 0).all()
    assert (a == T.unlabelled_subset(100, lab, 20, seed=5)).all()
    assert not (a == T.unlabelled_subset(100, lab, 20, seed=6)).all()
    assert len(T.unlabelled_subset(100, lab, None, seed=0)) == 97
