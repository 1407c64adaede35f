import sys

from conveyor.client import Client  # zenml: from zenml.client import Client
from conveyor.enums import ExecutionStatus  # zenml: from zenml.enums import ExecutionStatus

from pipelines import training_pipeline

if __name__ == "__main__":
    config = sys.argv[1] if len(sys.argv) > 1 else "configs/training.yaml"
    run = training_pipeline.with_options(config_path=config)()
    run = Client().get_pipeline_run(run.name)
    for step_name, step in run.steps.items():
        print(f"{step_name}: {step.status}")
    print("COMPLETED" if run.status == ExecutionStatus.COMPLETED else f"NOT COMPLETED: {run.status}")
