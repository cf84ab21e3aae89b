"""Type stubs for the compiled fixed-memory engine (private; see edgekm._backend)."""
from typing import Any

import numpy as np
import numpy.typing as npt

class Engine:
    kind: str
    dtype: np.dtype
    init_args: tuple
    buffers: dict[str, np.ndarray]
    free_top: int
    n_points: int
    n_buckets: int
    b_slot: int
    b_n: int
    absorptions: int
    hits: int
    misses: int
    fallbacks: int
    n_centers: int
    n_iter: int
    n_seen: float
    inertia: float
    phi0: float
    est_cost: float
    dirty: bool
    initialised: bool
    def __init__(self, kind: str, n_features: int, n_clusters: int, coreset_size: int,
                 merge_degrees: tuple[int, ...], max_levels: int, n_init: int, max_iter: int,
                 switch_threshold: float, dtype: Any, seed: int,
                 representative: str | None = None) -> None: ...
    @property
    def memory_bytes(self) -> int: ...
    def partial_fit(self, X: npt.NDArray[np.floating],
                    sample_weight: npt.NDArray[np.float64]) -> None: ...
    def learn_one(self, x: object, w: float = 1.0) -> bool: ...
    def query(self) -> tuple[npt.NDArray[np.floating], float]: ...
    def coreset(self) -> tuple[npt.NDArray[np.floating], npt.NDArray[np.float64],
                               npt.NDArray[np.float64], int]: ...
    def stats(self) -> dict[str, int]: ...
