"""attributes service entry point.

The stage logic lives in the storelens library and runs today inside the
embedded pipeline (`storelens demo`). This standalone process needs the
Kafka bus of the distributed deployment, which is not built yet; it says so
and exits instead of pretending to run.
"""
import sys

if __name__ == "__main__":
    print("error: the standalone attributes service needs the Kafka bus (distributed deployment, not built yet); "
          "use 'storelens demo' for the embedded mode", file=sys.stderr)
    sys.exit(2)
