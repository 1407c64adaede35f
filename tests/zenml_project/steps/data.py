import random
from typing import Annotated, Tuple

from conveyor import log_metadata, step  # zenml: from zenml import log_metadata, step


@step
def load_data(n_rows: int = 100, seed: int = 0) -> Annotated[list[tuple[float, float]], "dataset"]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n_rows):
        x = rng.uniform(-1.0, 1.0)
        rows.append((x, 3.0 * x + 0.5 + rng.gauss(0.0, 0.05)))
    log_metadata(metadata={"n_rows": n_rows, "source": "synthetic"})
    return rows


@step
def split_data(
    dataset: list[tuple[float, float]], test_size: float = 0.2
) -> Tuple[Annotated[list[tuple[float, float]], "train_set"], Annotated[list[tuple[float, float]], "test_set"]]:
    cut = int(len(dataset) * (1 - test_size))
    return dataset[:cut], dataset[cut:]
