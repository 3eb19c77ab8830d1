"""Throughput benchmark: the real ``sync_instance`` subflow against a minimal raw pipeline.

``python -m bench`` (or ``make bench``) starts a reference seq server and a local Prefect
server in their own processes, creates throwaway PostgreSQL databases, runs each variant in
its own child process (so peak RSS is per variant), checks every run's rows and cursor
against the server, prints a markdown table and writes the raw numbers as JSON.

Modules: ``harness`` (rounds, wiring, checks), ``services`` (the processes and databases
the benchmark owns), ``raw`` (the baseline pipeline, a child), ``subflow`` (the syncflow
child), ``probe`` (timing and resource measurements shared by the children), ``report``
(table and JSON).
"""
