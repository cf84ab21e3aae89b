"""The fixed settings of the fleet demo, shared by the run and its reports."""

#: sync rounds of the demo
ROUNDS = 12
#: v1 is published after this round, v2 after PUBLISH_V2 (canary), promoted after PROMOTE_V2
PUBLISH_V1, PUBLISH_V2, PROMOTE_V2 = 3, 6, 8
#: points streamed through the fleet by default (the drift generator)
DEFAULT_POINTS = 240_000
#: features of the generated stream
DEFAULT_FEATURES = 10
#: distance each generated centre travels over the whole stream (cube side = 1)
DRIFT_TRAVEL = 0.25
#: m: points per frame and per aggregator bucket
CORESET_SIZE = 200
#: restarts of the batch k-means reference on all the data (the paper's baseline: best of 5)
BATCH_N_INIT = 5
#: restarts of the per-round fits behind the cost-over-time plot (2 got stuck in a local
#: optimum in 1 of 36 fits; 5 did not in any)
ROUND_N_INIT = 5
#: the per-round batch references are fitted on a uniform sample of at most this many of
#: the points (their cost is on all of them); the final reference uses every point
ROUND_SAMPLE = 40_000
#: restarts of each published version's fit on the aggregate
PUBLISH_N_INIT = 10
#: target share of the fleet in the v2 canary cohort
CANARY_SHARE = 0.5
#: coreset points sampled for the 2-D projection
PROJECTION_POINTS = 600
#: share of all the points beyond their cluster's p99 under the final version (fitted on all
#: of them; about 1 % expected) above which the report warns
CALIBRATION_LIMIT = 0.05
MAX_DEVICES = 256
MAX_CLUSTERS = 100
MODEL = "fleet-demo"
