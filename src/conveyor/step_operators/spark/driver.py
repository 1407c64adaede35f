# The Python file spark-submit runs as the application (spark-submit needs a file, not `python -m`): it runs the
# step entrypoint with the same arguments, then stops the step's Spark session so the application ends cleanly.
#
# Python puts this file's folder first on sys.path; that folder holds `operator.py`, which would shadow the
# standard library's `operator`. So the very first statement takes it off again (sys and os are already loaded by
# the interpreter's start-up, nothing is looked up on the path before it). No `from __future__` import for that
# reason either.
import os
import sys

if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]


def main() -> int:
    from conveyor.entrypoints.step_operator import main as entrypoint

    try:
        return entrypoint()
    finally:
        from conveyor.step_operators.spark import stop_spark_session

        try:
            stop_spark_session()
        except Exception as err:  # noqa: BLE001 - the step's result is written already
            print(f"conveyor: stopping the Spark session failed: {err}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
