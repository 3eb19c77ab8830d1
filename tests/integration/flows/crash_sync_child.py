"""Child process of the crash test: run one real instance sync, to be SIGKILLed at any point.

    python tests/integration/flows/crash_sync_child.py RECORD_ID

Everything comes from the environment, as for a deployed flow: ``SYNCFLOW_DATABASE_URL``
(the test store), ``SYNCFLOW_LOCK_LEASE_SECONDS`` and ``PREFECT_API_URL`` (the test
harness' server, where the instance's block lives). Prints the subflow's result as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys

from flows.instance_sync import sync_instance


def main(argv: list[str]) -> int:
    record_id = int(argv[1])
    result = asyncio.run(sync_instance(record_id=record_id))
    sys.stdout.write(json.dumps(result, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
