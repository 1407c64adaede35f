import json
import os
from pathlib import Path

from conveyor import get_step_context  # zenml: from zenml import get_step_context


def _record(event: dict) -> None:
    path = Path(os.environ.get("HOOK_LOG", "hooks.jsonl"))
    with path.open("a") as f:
        f.write(json.dumps(event) + "\n")


def notify_failure(exception: BaseException) -> None:
    context = get_step_context()
    _record({"hook": "failure", "step": context.step_run.name, "error": str(exception), "pid": os.getpid()})


def notify_success() -> None:
    _record({"hook": "success", "step": get_step_context().step_run.name, "pid": os.getpid()})
