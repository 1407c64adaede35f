"""The quickstart's steps: digits → split and scale → logistic regression → accuracy.

They live in their own module so that the `local` step operator's subprocess can import them by name.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np

from conveyor import step
from conveyor.config import ResourceSettings


@step
def load_data() -> tuple[Annotated[np.ndarray, "features"], Annotated[np.ndarray, "labels"]]:
    """The 8×8 handwritten digits that ship with scikit-learn (1,797 images, no download)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.data.astype(np.float64), digits.target.astype(np.int64)


@step
def preprocess(
    features: np.ndarray, labels: np.ndarray, test_size: float = 0.25, seed: int = 42
) -> tuple[
    Annotated[np.ndarray, "x_train"],
    Annotated[np.ndarray, "x_test"],
    Annotated[np.ndarray, "y_train"],
    Annotated[np.ndarray, "y_test"],
]:
    """Stratified train/test split, then standard scaling fitted on the training part only."""
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=test_size, random_state=seed, stratify=labels
    )
    scaler = StandardScaler().fit(x_train)
    return scaler.transform(x_train), scaler.transform(x_test), y_train, y_test


@step(step_operator="local", settings={"resources": ResourceSettings(cpu_count=1, memory="1GB")})
def train(
    x_train: np.ndarray, y_train: np.ndarray, c: float = 1.0
) -> tuple[Annotated[np.ndarray, "coef"], Annotated[np.ndarray, "intercept"], Annotated[np.ndarray, "classes"]]:
    """Multinomial logistic regression, run by the `local` step operator in its own process.

    The model is returned as plain numpy weights, which any consumer can load without scikit-learn.
    """
    import os

    from sklearn.linear_model import LogisticRegression

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"training in process {os.getpid()} on {cpus} CPU(s), {len(x_train)} samples")
    model = LogisticRegression(C=c, max_iter=1000).fit(x_train, y_train)
    return model.coef_, model.intercept_, model.classes_


@step
def evaluate(
    coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> Annotated[float, "accuracy"]:
    """Accuracy of the trained weights on the held-out set."""
    predicted = classes[np.argmax(x_test @ coef.T + intercept, axis=1)]
    return float(np.mean(predicted == y_test))
