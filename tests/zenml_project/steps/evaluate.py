from typing import Annotated

from conveyor import log_metadata, save_artifact, step  # zenml: from zenml import log_metadata, save_artifact, step


@step
def evaluate_model(model: dict, test_set: list[tuple[float, float]]) -> Annotated[float, "test_mse"]:
    mse = sum((model["w"] * x + model["b"] - y) ** 2 for x, y in test_set) / len(test_set)
    log_metadata(metadata={"test_mse": mse})
    save_artifact({"mse": mse, "n": len(test_set)}, name="evaluation_report")
    return mse
