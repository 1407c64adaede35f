import os
from typing import Annotated

from conveyor import get_step_context, log_metadata, step  # zenml: from zenml import get_step_context, log_metadata, step
from conveyor.config import ResourceSettings  # zenml: from zenml.config import ResourceSettings

from steps.hooks import notify_failure


@step(
    step_operator="trainer",
    settings={"resources": ResourceSettings(cpu_count=1, memory="1GB")},
    on_failure=notify_failure,
)
def train_model(
    train_set: list[tuple[float, float]], learning_rate: float = 0.01, epochs: int = 200
) -> Annotated[dict, "model"]:
    if learning_rate <= 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate}")
    w = b = 0.0
    for _ in range(epochs):
        gw = sum((w * x + b - y) * x for x, y in train_set) * 2 / len(train_set)
        gb = sum((w * x + b - y) for x, y in train_set) * 2 / len(train_set)
        w, b = w - learning_rate * gw, b - learning_rate * gb
    context = get_step_context()
    log_metadata(metadata={"learning_rate": learning_rate, "epochs": epochs})
    log_metadata(metadata={"w": w, "b": b}, artifact_name="model", infer_artifact=True)
    return {
        "w": w,
        "b": b,
        "trained_in": {
            "pipeline": context.pipeline.name,
            "run": context.pipeline_run.name,
            "step": context.step_run.name,
            "pid": os.getpid(),
            "model_uri": context.get_output_artifact_uri("model"),
        },
    }
