"""The `spark` step operator: a step run through spark-submit, and `get_spark_session()` for the step's own use.

Importing this package (or its `flavor.py` and `operator.py`) does not import pyspark: only `get_spark_session()`
does, inside the step that calls it. The operator runs Spark's own `spark-submit`, it needs no pyspark import.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from conveyor.step_operators._lazy import flavor_exports

if TYPE_CHECKING:
    from conveyor.step_operators.spark.flavor import (
        SparkStepOperatorConfig,
        SparkStepOperatorFlavor,
        SparkStepOperatorSettings,
    )
    from pyspark.sql import SparkSession

#: set by the operator for the step: the master URL the step's session binds to (outside spark-submit too)
MASTER_ENV = "CONVEYOR_SPARK_MASTER"
#: set by spark-submit's PythonRunner for the Python driver it starts: the JVM to talk to already exists
GATEWAY_ENV = "PYSPARK_GATEWAY_PORT"


def get_spark_session(**conf: Any) -> "SparkSession":
    """The SparkSession of the application this step is the driver of, bound to the operator's cluster.

    Inside a step run by the `spark` step operator the step's process *is* the driver spark-submit started (client
    mode): the session is built from the properties spark-submit passed (master, app name, executor sizes, the
    interpreter, the shipped code), so nothing needs to be repeated here. Elsewhere (a unit test, a notebook) it
    builds a session on `$CONVEYOR_SPARK_MASTER`, or `local[*]`. Calling it again returns the same session. Extra
    keyword arguments become Spark properties of a new session (Spark ignores most of them on an existing one).

        from conveyor.step_operators.spark import get_spark_session

        @step(step_operator="spark")
        def daily_totals(day: str) -> dict:
            spark = get_spark_session()
            df = spark.read.parquet(f"s3a://events/{day}")
            return {r["kind"]: r["n"] for r in df.groupBy("kind").count().withColumnRenamed("count", "n").collect()}
    """
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    if not os.environ.get(GATEWAY_ENV):  # not under spark-submit: no master was passed to a JVM
        builder = builder.master(os.environ.get(MASTER_ENV) or "local[*]")
    for key, value in conf.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def stop_spark_session() -> None:
    """Stop the step's session if it made one, so the application ends FINISHED at once (not at JVM exit)."""
    import sys

    if "pyspark.sql" not in sys.modules:
        return
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is not None:
        session.stop()


# the flavor's Settings, Config and Flavor classes, loaded on first use (docs/integrations.md)
__getattr__, __dir__ = flavor_exports(__name__, "Spark")
__all__ = ["get_spark_session", "stop_spark_session", "SparkStepOperatorConfig", "SparkStepOperatorFlavor",
           "SparkStepOperatorSettings"]
