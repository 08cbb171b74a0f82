"""Choose exit thresholds that meet a p95 latency target with the best expected accuracy.

For every Pareto point of the bundle's threshold profile we know the share of requests that
leaves at each exit. With the measured arrival rate and each stage's cost, every stage is a
queue; a point whose load would saturate a stage is infeasible; otherwise we predict the p95
of the end-to-end latency mixture. The prediction is then corrected by the ratio of observed
to predicted p95 (smoothed), and the choice has hysteresis: moving to a slower, more accurate
point needs headroom and a dwell time; moving to a cheaper point happens at once.

Devices batch whatever is queued, so a stage's cost per request falls as load rises. Where a
device reports its batch cost (fixed + per-request part, up to its largest batch), a stage is
modelled as a greedy batching server: below one request per batch time it is M/D/1-like;
above, each batch carries the requests that arrived during the previous one, b = rate x c(b),
and a request waits for the rest of the running batch plus its own. It saturates only when b
approaches the largest batch. Measured at low load, the plain per-request cost would call
most settings infeasible the moment load steps up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from distree_mqtt.bundle.manifest import ProfilePoint

Z95 = 1.6448536269514722


@dataclass(frozen=True)
class StageEstimate:
    service_ms: float  # per-request cost (batch compute / batch size), median over replicas
    batch_ms: float  # time one batch takes (what a request sees), median over replicas
    replicas: int
    # Batch cost c(b) = fixed + per_request x b (worker busy time), where the devices report it.
    batch_fixed_ms: float = 0.0
    batch_per_request_ms: float = 0.0
    max_batch: int = 1

    @property
    def batching_model(self) -> bool:
        return self.batch_fixed_ms + self.batch_per_request_ms > 0


# A stage whose batches would have to exceed this share of the largest batch cannot keep up.
SATURATED_BATCH_SHARE = 0.9


def stage_sojourn(rate_per_s: float, stage: StageEstimate) -> tuple[float, float] | None:
    """(mean, variance) of the time a request spends at one replica (ms), None if saturated."""
    if not stage.batching_model:
        rho = rate_per_s * stage.service_ms / 1000.0
        if rho >= 0.98:
            return None
        sojourn = stage.batch_ms + rho * stage.service_ms / (1 - rho)
        return sojourn, sojourn**2
    fixed, per_request = stage.batch_fixed_ms, stage.batch_per_request_ms
    rate = rate_per_s / 1000.0  # per ms
    single = fixed + per_request
    busy = rate * single
    if busy < 1:
        # One request per batch: it finds the worker busy with probability `busy` and then
        # waits for the rest of that batch (uniform), then its own.
        return single * (1 + busy / 2), single**2 * (busy / 3 - busy**2 / 4)
    if rate * per_request >= 1:
        return None
    batch = rate * fixed / (1 - rate * per_request)
    if batch > SATURATED_BATCH_SHARE * stage.max_batch:
        return None
    cost = fixed + per_request * batch
    return 1.5 * cost, cost**2 / 12


@dataclass(frozen=True)
class LoadEstimate:
    arrival_rate: float  # requests per second entering stage 0
    stages: list[StageEstimate]
    hop_overhead_ms: float = 2.0


@dataclass(frozen=True)
class Prediction:
    feasible: bool
    p95_ms: float
    utilisation: list[float]


def predict(point: ProfilePoint, load: LoadEstimate) -> Prediction:
    """Predicted p95 end-to-end latency of a threshold setting under a load."""
    reach = [sum(point.exit_rates[k:]) for k in range(len(point.exit_rates))]
    means: list[float] = []
    variances: list[float] = []
    utilisation: list[float] = []
    for k, stage in enumerate(load.stages):
        rate = load.arrival_rate * reach[k] / max(1, stage.replicas)
        utilisation.append(rate * stage.service_ms / 1000.0)
        if reach[k] <= 0:
            means.append(0.0)
            variances.append(0.0)
            continue
        sojourn = stage_sojourn(rate, stage) if stage.replicas > 0 else None
        if sojourn is None:
            return Prediction(False, math.inf, utilisation)
        means.append(sojourn[0] + load.hop_overhead_ms)
        variances.append(sojourn[1])
    # Latency of the path ending at exit j: sum of stage sojourns; normal approximation.
    paths = []
    for j, share in enumerate(point.exit_rates):
        if share <= 0:
            continue
        mean = sum(means[: j + 1])
        sigma = math.sqrt(sum(variances[: j + 1]))
        paths.append((share, mean, sigma))
    return Prediction(True, _mixture_quantile(paths, 0.95), utilisation)


def _mixture_quantile(paths: list[tuple[float, float, float]], q: float) -> float:
    def cdf(x: float) -> float:
        total = 0.0
        for share, mean, sigma in paths:
            z = (x - mean) / sigma if sigma > 0 else (math.inf if x >= mean else -math.inf)
            total += share * 0.5 * (1 + math.erf(z / math.sqrt(2)))
        return total

    low, high = 0.0, max(mean + 6 * sigma for _, mean, sigma in paths) + 1.0
    for _ in range(60):
        middle = (low + high) / 2
        if cdf(middle) < q:
            low = middle
        else:
            high = middle
    return high


@dataclass
class ThresholdController:
    """Stateful choice along the profile front (index 0 = cheapest, last = most accurate)."""

    front: list[ProfilePoint]
    latency_target_ms: float
    headroom: float = 0.8
    dwell_s: float = 2.0
    smoothing: float = 0.3
    correction: float = 1.0
    current: int = -1
    last_move: float = -math.inf
    history: list[tuple[float, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.front:
            raise ValueError("the threshold profile is empty")
        if self.current < 0:
            self.current = len(self.front) - 1

    def observe(self, observed_p95_ms: float | None, load: LoadEstimate) -> None:
        """Fold the observed p95 of the current setting into the correction factor."""
        if observed_p95_ms is None or observed_p95_ms <= 0:
            return
        predicted = predict(self.front[self.current], load)
        if not predicted.feasible or predicted.p95_ms <= 0:
            return
        ratio = min(4.0, max(0.5, observed_p95_ms / predicted.p95_ms))
        self.correction = (1 - self.smoothing) * self.correction + self.smoothing * ratio

    def choose(self, load: LoadEstimate, now: float) -> ProfilePoint:
        predictions = [predict(point, load) for point in self.front]
        corrected = [p.p95_ms * self.correction if p.feasible else math.inf for p in predictions]
        target = self.latency_target_ms
        if corrected[self.current] > target:
            # Too slow: the most accurate setting predicted to meet the target, else the cheapest.
            meeting = [i for i in range(len(self.front)) if corrected[i] <= target]
            chosen = max(meeting, key=lambda i: self.front[i].accuracy) if meeting else 0
        else:
            chosen = self.current
            # Any move starts a dwell period before the next upward move: no flip-flopping.
            if now - self.last_move >= self.dwell_s:
                better = [
                    i
                    for i in range(len(self.front))
                    if self.front[i].accuracy > self.front[self.current].accuracy
                    and corrected[i] <= target * self.headroom
                ]
                if better:
                    chosen = max(better, key=lambda i: self.front[i].accuracy)
        if chosen != self.current:
            self.last_move = now
            self.history.append((now, chosen))
            self.current = chosen
        return self.front[self.current]
