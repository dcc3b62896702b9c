"""The frozen linear probe: a logistic regression on standardised pooled features, fixed seed.

Also the scoring shared by every protocol (macro-F1 is the headline, accuracy alongside) and the summary over
seeds (mean and sample standard deviation).
"""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression, RidgeClassifierCV
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from step_dist.evaluate.config import ProbeConfig


def scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, float]:
    labels = list(range(n_classes))  # every class counts in the macro average, predicted or not
    return {
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
    }


def _check(x_train: np.ndarray, x_test: np.ndarray) -> None:
    if x_train.ndim != 2 or x_test.ndim != 2 or x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"features must be [n, D] with the same D, got {x_train.shape} and {x_test.shape}")
    for name, x in (("train", x_train), ("test", x_test)):
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name} features hold NaN/inf: the feature extractor produced non-finite values")


def linear_probe(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
    n_classes: int, seed: int = 0, cfg: ProbeConfig | None = None,
) -> dict[str, float]:
    """Fit on train features, score on test: {macro_f1, accuracy}."""
    cfg = cfg or ProbeConfig()
    _check(x_train, x_test)
    clf = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=cfg.C, max_iter=cfg.max_iter, random_state=seed),
    )
    clf.fit(x_train, y_train)
    return scores(y_test, clf.predict(x_test), n_classes)


def ridge_probe(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, n_classes: int
) -> dict[str, float]:
    """MiniRocket's own classifier: ridge regression with the penalty chosen by leave-one-out CV."""
    _check(x_train, x_test)
    clf = make_pipeline(StandardScaler(), RidgeClassifierCV(alphas=np.logspace(-3, 3, 10)))
    clf.fit(x_train, y_train)
    return scores(y_test, clf.predict(x_test), n_classes)


def summarise(values: list[float]) -> dict[str, float]:
    """Mean and spread over seeds (sample std; 0 for a single seed)."""
    arr = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(arr.mean()) if arr.size else float("nan"),
        "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        "n": int(arr.size),
    }
