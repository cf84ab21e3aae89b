"""The cloud side: the aggregator, a facade over services (database, ingest, trees,
versions, rollout, telemetry, publish policies, metrics), and its thin HTTP layer in
:mod:`edgekm.sync.cloud.http`.  Never imported on a device."""
