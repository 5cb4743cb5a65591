"""Forward stepwise feature selection for ordinary least squares, in plain Python.

The data set is generated from a fixed seed (nothing is downloaded and no numeric package is
needed on the workers), so the DAG `model_select` and a single process computing `select()`
reach the same features, coefficients and score: the DAG's tasks call exactly these functions,
with the same arguments, in an order that does not change the arithmetic.

Run directly, prints the single-process result as JSON:  python3 model.py
"""
import json
import math
import random

SEED = 20261205
N_ROWS = 240
FEATURES = ["age", "bmi", "bp", "s1", "s2", "s3", "s4", "s5"]
FOLDS = 5
# A candidate is kept only if it lowers the cross-validated error by at least this fraction:
# a feature of pure noise lowers it by chance a little, never by this much.
MIN_GAIN = 0.005


def dataset():
    """(X, y): N_ROWS rows of the FEATURES; y depends on bmi, s1 and s5 (and noise) only."""
    rng = random.Random(SEED)
    x_rows, y = [], []
    for _ in range(N_ROWS):
        row = [rng.gauss(0.0, 1.0) for _ in FEATURES]
        x_rows.append(row)
        y.append(150.0 + 30.0 * row[1] - 12.0 * row[3] + 18.0 * row[7] + rng.gauss(0.0, 20.0))
    return x_rows, y


def _solve(a, b):
    """Solves a·x = b (a square) by Gaussian elimination with partial pivoting."""
    n = len(a)
    m = [list(a[i]) + [b[i]] for i in range(n)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        if abs(m[pivot][col]) < 1e-12:
            raise ValueError("singular design matrix")
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(col + 1, n):
            f = m[r][col] / m[col][col]
            for c in range(col, n + 1):
                m[r][c] -= f * m[col][c]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (m[r][n] - sum(m[r][c] * x[c] for c in range(r + 1, n))) / m[r][r]
    return x


def fit(x_rows, y, cols):
    """OLS coefficients [intercept, one per column of cols] by the normal equations."""
    design = [[1.0] + [row[c] for c in cols] for row in x_rows]
    k = len(cols) + 1
    xtx = [[sum(d[i] * d[j] for d in design) for j in range(k)] for i in range(k)]
    xty = [sum(d[i] * t for d, t in zip(design, y)) for i in range(k)]
    return _solve(xtx, xty)


def predict(coef, row, cols):
    return coef[0] + sum(b * row[c] for b, c in zip(coef[1:], cols))


def cv_mse(x_rows, y, cols):
    """Mean squared error of OLS on cols, FOLDS-fold cross-validation (row i in fold i % FOLDS)."""
    errors = []
    for fold in range(FOLDS):
        train = [i for i in range(len(y)) if i % FOLDS != fold]
        test = [i for i in range(len(y)) if i % FOLDS == fold]
        coef = fit([x_rows[i] for i in train], [y[i] for i in train], cols)
        errors.extend((predict(coef, x_rows[i], cols) - y[i]) ** 2 for i in test)
    return sum(errors) / len(errors)


def improves(new, old):
    return new < old * (1.0 - MIN_GAIN)


def best_candidate(scores):
    """The (feature index, score) with the lowest score; ties go to the lower index."""
    return min(scores.items(), key=lambda kv: (kv[1], kv[0]))


def candidates(selected):
    return [i for i in range(len(FEATURES)) if i not in selected]


def result(x_rows, y, selected, score):
    """What the selection returns: chosen features in order, coefficients on all rows, score."""
    coef = fit(x_rows, y, selected)
    return {
        "features": [FEATURES[i] for i in selected],
        "intercept": coef[0],
        "coefficients": {FEATURES[i]: b for i, b in zip(selected, coef[1:])},
        "cv_mse": score,
        "cv_rmse": math.sqrt(score),
    }


def select():
    """The whole selection in one process: the reference the DAG must equal."""
    x_rows, y = dataset()
    selected, score = [], cv_mse(x_rows, y, [])
    while candidates(selected):
        scores = {f: cv_mse(x_rows, y, selected + [f]) for f in candidates(selected)}
        f, s = best_candidate(scores)
        if not improves(s, score):
            break
        selected, score = selected + [f], s
    return result(x_rows, y, selected, score)


if __name__ == "__main__":
    print(json.dumps(select(), sort_keys=True))
