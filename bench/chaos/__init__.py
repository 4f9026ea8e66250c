"""The chaos suite's parts (``bench/chaos.py`` is the entry point):

- ``infra``: a Kafka (single node or three-broker cluster) and a Postgres of the run's own, on
  other ports and in temp dirs, that the suite may kill; removed at the end, also on failure.
- ``procs``: the Lockstep processes under a supervisor that kills them (SIGKILL) on purpose,
  restarts whatever exits, and tells a kill from a crash (a crash loop fails the run).
- ``fuzz``: the malformed records (raw aiokafka, at least 60 kinds) and HTTP requests.
- ``platform``: what people and tools do meanwhile: flag changes through the flags admin API,
  and health signals that breach the model's rollback criterion; their tallies.
- ``count``: what the topics themselves say: expected, exactly once, lost, duplicated; lag.
"""
