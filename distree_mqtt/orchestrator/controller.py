"""Choose exit thresholds that meet a p95 latency target with the best expected accuracy.

For every Pareto point of the bundle's threshold profile we know the share of requests that
leaves at each exit. With the measured arrival rate and each stage's cost, every stage is a
queue; a point whose load would saturate a stage is infeasible; otherwise we predict the p95
of the end-to-end latency mixture, corrected by the smoothed ratio of observed to predicted p95.

Devices batch whatever is queued, so a stage's cost per request falls as load rises. Where a
device reports its batch cost (fixed + per-request part, up to its largest batch), a stage is
modelled as a greedy batching server: below one request per batch time it is M/D/1-like;
above, each batch carries the requests that arrived during the previous one, b = rate x c(b),
and a request waits for the rest of the running batch plus its own. Near the largest batch it
queues like one server whose service time is the full batch's cost per request: that wait is
what makes the tail grow before the stage saturates. Answering and handing on cost a device
different amounts (handing on encodes features), so the thresholds change each stage's cost.

The choice works like an autoscaler: quick to shed work, slow to take it back.
- Down at once when the load jumps beyond what the current setting was verified for; after
  `confirm_s` when it is over the target (predicted and observed) or the load has risen past
  its verified load: a burst shorter than that is absorbed by the queues.
- Moves down go to a setting with headroom (latency under target x headroom, and the target met
  at the recent peak load), and never pay accuracy for a few percent of latency.
- Up only as far as the least accurate setting recommended over the stabilisation window, so a
  lull in a steady load does not invite a climb that the next busy second undoes; a setting that
  had to be left stays barred at that load for a hold time that doubles if it fails again.
- Stage 0 sees every request whatever the thresholds: when it alone saturates, the choice is made
  on the later stages, which thresholds do relieve.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace
from typing import TypeVar

from distree_mqtt.bundle.manifest import ProfilePoint

T = TypeVar("T")
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
    # Worker time per request to answer it here or to hand it on (both beyond the batch cost).
    answer_cost_ms: float = 0.0
    forward_cost_ms: float = 0.0

    def with_forward_share(self, share: float) -> StageEstimate:
        """This stage when `share` of its requests go on: answering and handing on cost the
        worker differently, so the thresholds change its per-request cost."""
        extra = (1 - share) * self.answer_cost_ms + share * self.forward_cost_ms
        if extra <= 0 or not self.batching_model:
            return self
        return replace(self, batch_per_request_ms=self.batch_per_request_ms + extra)

    @property
    def batching_model(self) -> bool:
        return self.batch_fixed_ms + self.batch_per_request_ms > 0


# A stage whose batches would have to exceed this share of the largest batch cannot keep up,
# nor one busier than this at full batches.
SATURATED_BATCH_SHARE = 0.9
SATURATED_UTILISATION = 0.95
# Two rate estimates this close are a steady load (not one still being measured in).
STEADY_SHARE = 0.1
# A move down must save at least this share of latency to be worth its accuracy.
NEAR_FASTEST = 0.05


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
    # Heavy traffic: at full batches the stage is a single server with this service time.
    # Its service times vary (a device shares its CPU, its interpreter and the network), so
    # the wait is M/M/1's, twice that of a deterministic server (Kingman with c_s = 1).
    full = (fixed + per_request * stage.max_batch) / stage.max_batch
    rho = rate * full
    if rho >= SATURATED_UTILISATION:
        return None
    wait = rho * full / (1 - rho)
    single = fixed + per_request
    busy = rate * single
    if busy < 1:
        # One request per batch: it finds the worker busy with probability `busy` and then
        # waits for the rest of that batch (uniform), then its own.
        return single * (1 + busy / 2) + wait, single**2 * (busy / 3 - busy**2 / 4) + wait**2
    if rate * per_request >= 1:
        return None
    batch = rate * fixed / (1 - rate * per_request)
    if batch > SATURATED_BATCH_SHARE * stage.max_batch:
        return None
    cost = fixed + per_request * batch
    return 1.5 * cost + wait, cost**2 / 12 + wait**2


@dataclass(frozen=True)
class LoadEstimate:
    arrival_rate: float  # requests per second entering stage 0
    stages: list[StageEstimate]
    hop_overhead_ms: float = 2.0


def _reach(point: ProfilePoint) -> list[float]:
    """Share of requests that reach each stage."""
    return [sum(point.exit_rates[k:]) for k in range(len(point.exit_rates))]


@dataclass(frozen=True)
class Prediction:
    feasible: bool
    p95_ms: float
    utilisation: list[float]


def predict(point: ProfilePoint, load: LoadEstimate, first_stage: int = 0) -> Prediction:
    """Predicted p95 end-to-end latency of a threshold setting under a load (from
    `first_stage` on: the earlier stages' time is left out)."""
    reach = _reach(point)
    means: list[float] = []
    variances: list[float] = []
    utilisation: list[float] = []
    for k, stage in enumerate(load.stages):
        rate = load.arrival_rate * reach[k] / max(1, stage.replicas)
        utilisation.append(rate * stage.service_ms / 1000.0)
        if reach[k] <= 0 or k < first_stage:
            means.append(0.0)
            variances.append(0.0)
            continue
        onward = reach[k + 1] / reach[k] if k + 1 < len(reach) else 0.0
        sojourn = stage_sojourn(rate, stage.with_forward_share(onward)) if stage.replicas > 0 else None
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
class _Failure:
    rate: float  # arrival rate at which the setting had to be left
    until: float  # no retry at that load before this time
    hold_s: float  # the hold applied; doubles when the setting fails again


@dataclass
class ThresholdController:
    """Stateful choice along the profile front (index 0 = cheapest, last = most accurate)."""

    front: list[ProfilePoint]
    latency_target_ms: float
    headroom: float = 0.8
    dwell_s: float = 2.0
    smoothing: float = 0.15
    correction: float = 1.0
    current: int = -1
    last_move: float = -math.inf
    # A setting is chosen so that it still meets the target with this much more load; once
    # the load exceeds what the current setting was verified for, it has to qualify again.
    load_headroom: float = 0.0
    # A rise this far beyond the verified load is a step, not a burst: it is acted on at once.
    jump_rise: float = 0.2
    stabilisation_s: float = 20.0
    confirm_s: float = 1.5  # longer than one telemetry interval; a step is a jump (below)
    trouble_since: float = math.inf
    last_reason: str = ""  # why the setting last changed
    observed_p95_ms: float | None = None  # of the current setting, as last observed
    _rates: tuple[float, float] = (0.0, 0.0)  # the two latest distinct rate estimates
    _rate_since: float = -math.inf  # when the latest one arrived
    recent_rates: deque[tuple[float, float]] = field(default_factory=deque)
    recommendations: deque[tuple[float, int]] = field(default_factory=deque)
    failure_hold_s: float = 20.0
    max_failure_hold_s: float = 160.0
    # A failed setting stays barred while the load is above this share of its failure rate.
    failure_rate_share: float = 0.85
    verified_rate: float = 0.0
    failures: dict[int, _Failure] = field(default_factory=dict)
    history: list[tuple[float, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.front:
            raise ValueError("the threshold profile is empty")
        if self.current < 0:
            self.current = len(self.front) - 1

    def observe(self, observed_p95_ms: float | None, load: LoadEstimate) -> None:
        """Fold the observed p95 of the current setting into the correction factor."""
        self.observed_p95_ms = observed_p95_ms
        if observed_p95_ms is None or observed_p95_ms <= 0:
            return
        predicted = predict(self.front[self.current], load)
        if not predicted.feasible or predicted.p95_ms <= 0:
            return
        ratio = min(4.0, max(0.5, observed_p95_ms / predicted.p95_ms))
        self.correction = (1 - self.smoothing) * self.correction + self.smoothing * ratio

    def barred(self, index: int, rate: float, now: float) -> bool:
        """Whether a setting is barred at this load: it, or a cheaper one (less accurate, so
        it loads the later stages less), had to be left and its hold has not passed."""
        accuracy = self.front[index].accuracy
        return any(
            now < failure.until
            and rate >= self.failure_rate_share * failure.rate
            and self.front[failed].accuracy <= accuracy
            for failed, failure in self.failures.items()
        )

    def _record_failure(self, index: int, rate: float, now: float) -> None:
        previous = self.failures.get(index)
        hold = self.failure_hold_s
        if previous is not None and now < previous.until + previous.hold_s:
            hold = min(self.max_failure_hold_s, 2 * previous.hold_s)
            rate = min(rate, previous.rate) if now < previous.until else rate
        self.failures[index] = _Failure(rate=rate, until=now + hold, hold_s=hold)

    def _within_window(self, window: deque[tuple[float, T]], now: float, value: T) -> list[T]:
        """Add `value` to a timed window and return the values of the last `stabilisation_s`."""
        window.append((now, value))
        while window[0][0] < now - self.stabilisation_s:
            window.popleft()
        return [item for _, item in window]

    def _corrected(self, load: LoadEstimate, first_stage: int = 0) -> list[float]:
        predictions = [predict(point, load, first_stage) for point in self.front]
        return [p.p95_ms * self.correction if p.feasible else math.inf for p in predictions]

    def choose(self, load: LoadEstimate, now: float) -> ProfilePoint:
        rate = load.arrival_rate
        if rate != self._rates[1]:
            self._rates, self._rate_since = (self._rates[1], rate), now
        elif now - self._rate_since >= self.confirm_s:
            self._rates = (rate, rate)  # the same estimate for a while: a steady load
        # While the load is still climbing its estimate is partial: verify only a steady load.
        steady = abs(self._rates[1] - self._rates[0]) <= STEADY_SHARE * self._rates[0]
        # Settings are sized for the highest load of the recent past (over two estimates, to
        # damp their noise), as autoscalers size for their highest recent recommendation: a
        # lull in a steady load does not invite a climb that the next busy second undoes.
        recent = self._within_window(self.recent_rates, now, (self._rates[0] + self._rates[1]) / 2)
        peak = max(recent)
        busier = replace(load, arrival_rate=peak * (1 + self.load_headroom))
        first_stage = 0
        at_rate = self._corrected(load)
        if not any(map(math.isfinite, at_rate)):
            # Stage 0 (every request, whatever the thresholds) is saturated: no setting meets
            # the target, so choose for the later stages.
            first_stage = 1
            at_rate = self._corrected(load, first_stage)
        at_busier = self._corrected(busier, first_stage)
        target = self.latency_target_ms
        margin = target * self.headroom
        accuracy = [point.accuracy for point in self.front]
        current = self.current

        def qualifies(i: int) -> bool:
            """Headroom in latency now, and the target still met with more load."""
            return at_rate[i] <= margin and at_busier[i] <= target

        chosen, reason = current, ""
        # Over the target as predicted, unless what is observed says otherwise (a burst in the
        # rate estimate that the queues absorb): feedback for small deviations, the model alone
        # for jumps in load (below).
        observed = self.observed_p95_ms
        violated = at_rate[current] > target and (observed is None or observed > margin)
        # A burst shorter than `confirm_s` is absorbed by the queues; a load that stays needs
        # a new setting, and a jump beyond the load headroom is no burst: act on it at once.
        if violated or (rate > self.verified_rate and not qualifies(current)):
            self.trouble_since = min(self.trouble_since, now)
        else:
            self.trouble_since = math.inf
        jump = rate > self.verified_rate * (1 + self.jump_rise) and not qualifies(current)
        if jump or now - self.trouble_since >= self.confirm_s:
            reason = "over target" if violated else ("load jumped" if jump else "load rose")
            self.trouble_since = math.inf
            self._record_failure(current, rate, now)
            cheaper = [i for i in range(len(self.front)) if accuracy[i] < accuracy[current]]
            cheaper = [i for i in cheaper if not self.barred(i, rate, now)]
            meeting = [i for i in cheaper if qualifies(i)] or [i for i in cheaper if at_rate[i] <= target]
            if meeting:
                chosen = max(meeting, key=lambda i: accuracy[i])
            else:
                # Nothing meets the target: the fastest setting, or a more accurate one that is
                # slower by at most the headroom's share of the target.
                candidates = [*cheaper, current]
                fastest = min(at_rate[i] for i in candidates)
                near = [i for i in candidates if at_rate[i] <= fastest + target * (1 - self.headroom)]
                chosen = max(near, key=lambda i: accuracy[i]) if math.isfinite(fastest) else 0
            # Paying accuracy for under a few percent of latency does not relieve anything.
            if violated and at_rate[chosen] > at_rate[current] * (1 - NEAR_FASTEST):
                chosen = current
        # The most accurate setting that qualifies now; a climb goes only as far as the least of
        # these over the stabilisation window (as an autoscaler scales down to the highest
        # recent recommendation), so estimates that wobble for a moment do not move it.
        allowed = [i for i in range(len(self.front)) if qualifies(i) and not self.barred(i, rate, now)]
        recommended = max(allowed, key=lambda i: accuracy[i]) if allowed else 0
        recommendations = self._within_window(self.recommendations, now, recommended)
        if chosen == current and not violated and now - self.last_move >= self.dwell_s:
            lowest = min(recommendations, key=lambda i: accuracy[i])
            if accuracy[lowest] > accuracy[current]:
                chosen, reason = lowest, "headroom"
        if steady and at_rate[chosen] <= target:
            # The load this setting is known to carry: with headroom up to the recent peak,
            # or at least today's load.
            verified = peak * (1 + self.load_headroom) if qualifies(chosen) else rate
            self.verified_rate = verified if chosen != current else max(self.verified_rate, verified)
        if chosen != current:
            self.last_move = now
            self.last_reason = reason
            self.history.append((now, chosen))
            self.current = chosen
        return self.front[self.current]
