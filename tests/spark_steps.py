"""Steps the Spark tests run on the real standalone cluster (a module of their own: the executors import it from
the code archive spark-submit ships with --py-files, and it should stay light)."""

from __future__ import annotations

import os
import time

from conveyor import step


def bucket(value: int) -> str:
    """Runs on the executors inside a UDF: only importable there because the code archive was shipped."""
    return f"b{value % 4}"


@step
def spark_totals(rows: int) -> dict:
    from pyspark.sql import functions as F

    from conveyor.step_operators.spark import get_spark_session

    spark = get_spark_session()
    label = F.udf(bucket, "string")
    df = spark.range(rows).withColumn("group", label(F.col("id"))).withColumn("value", F.col("id") * 2)
    totals = {r["group"]: {"n": r["n"], "sum": r["total"], "max": r["biggest"]}
              for r in df.groupBy("group").agg(F.count("*").alias("n"), F.sum("value").alias("total"),
                                                F.max("value").alias("biggest")).collect()}
    conf = spark.sparkContext.getConf()
    executor_pids = sorted(set(spark.sparkContext.parallelize(range(8), 4).map(lambda _: os.getpid()).collect()))
    return {"totals": totals, "app_id": spark.sparkContext.applicationId, "app_name": conf.get("spark.app.name"),
            "master": spark.sparkContext.master, "executor_cores": conf.get("spark.executor.cores", None),
            "executor_memory": conf.get("spark.executor.memory", None), "driver_pid": os.getpid(),
            "executor_python_pids": executor_pids}


@step
def check_totals(result: dict, rows: int) -> dict:
    """A plain (non-Spark) step: recomputes the aggregate in Python and compares."""
    expected: dict[str, dict[str, int]] = {}
    for i in range(rows):
        entry = expected.setdefault(bucket(i), {"n": 0, "sum": 0, "max": 0})
        entry["n"] += 1
        entry["sum"] += 2 * i
        entry["max"] = max(entry["max"], 2 * i)
    assert result["totals"] == expected, (result["totals"], expected)
    return {"groups": len(expected), "rows": sum(e["n"] for e in expected.values())}


@step
def spark_hangs(seconds: float) -> int:
    """Starts executors, then keeps them busy with a long job: cancelling must end the application."""
    from conveyor.step_operators.spark import get_spark_session

    spark = get_spark_session()
    print(f"app-up {spark.sparkContext.applicationId}", flush=True)
    return spark.sparkContext.parallelize(range(2), 2).map(lambda x: time.sleep(seconds) or x).sum()


@step
def numbers_to(n: int) -> list[int]:
    return list(range(n))


@step
def total_of(values: list[int]) -> int:
    print(f"summing {len(values)} numbers", flush=True)
    return sum(values)
