"""The demo's drift episode: preferences shift while the model is served, and online learning
catches up, through the real stream, learner, registry and serving paths.

1. A few hundred users' histories are streamed in (a backfill). Their samples are the replay
   material; each user's last target-domain event is held back as the fixed regression set.
2. A topic suddenly becomes popular: each user makes a handful of events, half of them on it.
   They go through the Kafka-protocol broker and the consumer worker into samples.
3. The learner (in a thread, training as a Ray task) starts a round once
   ``online.every_samples`` samples arrived; the gate compares candidate and served version on
   the newest events and the regression set, and promotes the candidate; serving follows.
4. The next (not streamed) event of every user scores frozen against online version; a
   corrupted update (item ids remapped) is rejected; a rollback restores the previous version.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from crossrec.config import CrossRecConfig
from crossrec.data.dataset import CrossDomainDataset
from crossrec.data.synthetic import TOPICS, drift_interactions, item_topics, topic_of
from crossrec.errors import CrossRecError
from crossrec.feature_store import FeatureStore
from crossrec.feature_store.samples import Sample, write_samples
from crossrec.models.crossrec_model import CrossRecModel
from crossrec.online.finetune import evaluate_samples, model_samples
from crossrec.online.learner import OnlineLearner, RoundOutcome
from crossrec.stream.events import Event, EventProducer

Api = Callable[[str, str, Any], tuple[int, Any]]


def _wait(what: str, condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise CrossRecError(f"demo: timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def _model_recall(uri: str, target: str, samples: list[Sample]) -> float:
    from crossrec.models.bundle import checkpoint_dirs

    for _, ckpt in checkpoint_dirs(uri).items():
        model = CrossRecModel.from_pretrained(ckpt)
        if (model.target_domain or target) == target:
            data = model_samples(model, samples, target)
            return evaluate_samples(model, data, target)["recall@20"]
    raise CrossRecError(f"{uri} has no model for {target!r}")


def run_drift_episode(
    cfg: CrossRecConfig,
    dataset: CrossDomainDataset,
    store: FeatureStore,
    producer: EventProducer,
    api: Api,
    target: str,
    registry_root: Path,
    echo: Callable[[str], None],
    *,
    users: int = 300,
    every_samples: int | None = None,
) -> dict[str, float]:
    """Runs the episode against a served model; returns the measured figures."""
    topics = item_topics(dataset)
    if topics.max() < 0:
        echo("       skipped: the drift episode needs the synthetic world's topics")
        return {}
    in_target = topics[dataset.item_domain == dataset.domain_index[target]]
    trend = TOPICS[int(np.bincount(in_target[in_target >= 0]).argmax())][0]
    chosen = [
        u
        for u, seq in dataset.iter_sequences()
        if (dataset.item_domain[seq] == dataset.domain_index[target]).sum() >= 2
    ]
    chosen = chosen[:users]
    cfg = cfg.model_copy(deep=True)
    cfg.registry.root = str(registry_root)
    cfg.online.margin = 0.05  # holdouts of ~200 events measure recall@20 to about +-0.035
    # The shift moves half of the new behaviour to one topic, so a genuine update loses some of
    # the pre-shift regression score (0.690 -> 0.533-0.597 over nine demo runs, drops up to
    # 0.157, right at the default 0.15 absolute bound), while a corrupted one collapses (0.690 ->
    # 0.05). The episode lifts the absolute bound to 0.3; the 25% relative bound stays and binds
    # (0.17 at 0.690; on a small world's weak model, 0.158 -> a drill's 0.107, it still rejects).
    cfg.online.regression_margin = 0.3

    # 1. Backfill; each user's last target event is the regression set.
    regression: list[Sample] = []
    events: list[Event] = []
    t_index = dataset.domain_index[target]
    for user in chosen:
        seq, times = dataset.user_sequence(user), dataset.user_times(user)
        last = int(np.flatnonzero(dataset.item_domain[seq] == t_index)[-1])
        keys = [(dataset.items[g].domain, dataset.items[g].item_id) for g in seq.tolist()]
        regression.append(
            Sample(
                f"regression-{user}",
                user,
                *keys[last],
                float(times[last]),
                tuple(keys[:last][-cfg.online.context_length :]),
            )
        )
        events += [
            Event(
                event_id=f"hist-{user}-{n}",
                user_id=user,
                item_id=item_id,
                domain=domain,
                event_type="purchase",
                timestamp=float(times[n]),
            )
            for n, (domain, item_id) in enumerate(keys)
            if n != last
        ]
    cfg.online.regression_path = str(write_samples(registry_root / "regression.jsonl", regression))
    learner = OnlineLearner(cfg, store)
    base = len(learner.buffer)
    sent = time.perf_counter()
    for event in events:
        producer.send(event)
    producer.flush()
    _wait("the backfill's samples", lambda: len(learner.buffer) >= base + len(events), 300)
    echo(
        f"       backfilled {len(events):,} events of {len(chosen)} users through Kafka in "
        f"{time.perf_counter() - sent:.1f}s; their last {target} events "
        f"({len(regression)}) are the fixed regression set"
    )
    learner.skip_backlog()
    shift_start = learner.buffer.cursor()  # the drill replays the shift's window from here

    # 2. The shift.
    drift = drift_interactions(
        dataset,
        topic=trend,
        domain=target,
        users=chosen,
        events_per_user=5,
        share=0.5,
        start=time.time() - 3600,
        seed=cfg.online.seed,
    )
    by_user: dict[str, list[Any]] = {}
    for it in drift:
        by_user.setdefault(it.user_id, []).append(it)
    streamed = [it for evs in by_user.values() for it in evs[:-1]]
    if every_samples is None:  # a round once most of the shift is in
        every_samples = min(1000, max(cfg.online.min_samples, int(len(streamed) * 0.8)))
    cfg.online.every_samples = every_samples
    trend_rows = np.flatnonzero((topics == topic_of(trend)) & (dataset.item_domain == t_index))
    trend_ids = {dataset.items[g].item_id for g in trend_rows.tolist()}
    watch = chosen[0]

    def trend_share() -> tuple[int, str]:
        status, body = api("GET", f"/v1/users/{watch}/recommendations?domain={target}&k=10", None)
        if status != 200:
            raise CrossRecError(f"the API answered {status}: {body}")
        return sum(i["item_id"] in trend_ids for i in body["items"]), body["model_version"]

    before_share, served_before = trend_share()
    pointer = store.current_model()
    frozen_uri = pointer.uri if pointer else ""
    outcomes: list[RoundOutcome] = []
    stop = threading.Event()

    def learn() -> None:
        from training.incremental import ray_runner

        learner.runner = ray_runner(cfg.online)
        outcomes.extend(learner.run(should_stop=stop.is_set, max_rounds=1, max_seconds=600))

    thread = threading.Thread(target=learn, daemon=True, name="demo-online-learner")
    thread.start()
    echo(
        f"       a shift: {trend!r} {target} become popular; {len(chosen)} users make "
        f"{len(streamed):,} events, half of them on it (online learner: a round every "
        f"{every_samples} samples, trained as a Ray task)"
    )
    nth_sent = 0.0
    for n, it in enumerate(streamed, start=1):
        producer.send(
            Event(
                event_id=f"drift-{it.user_id}-{n}",
                user_id=it.user_id,
                item_id=it.item_id,
                domain=it.domain,
                event_type="purchase",
                timestamp=it.timestamp,
            )
        )
        if n == every_samples:
            producer.flush()
            nth_sent = time.perf_counter()
    producer.flush()
    try:
        _wait("the online round", lambda: bool(outcomes) or not thread.is_alive(), 600)
    finally:
        stop.set()
        thread.join(60)
    if not outcomes:
        raise CrossRecError("demo: the online learner made no round")
    outcome = outcomes[0]
    promoted_at = time.perf_counter()
    echo(f"       gate: {outcome.summary()}")
    figures: dict[str, float] = {"round_s": outcome.seconds["round"]}
    if outcome.accepted and outcome.version is not None:
        _wait(
            "the promoted version to be served",
            lambda: api("GET", "/v1/model", None)[1].get("model_version") == outcome.version,
            120,
        )
        served = time.perf_counter()
        figures.update(
            event_to_promoted_s=promoted_at - nth_sent, event_to_served_s=served - nth_sent
        )
        echo(
            f"       update cadence: event #{every_samples} sent -> version {outcome.version} "
            f"promoted in {promoted_at - nth_sent:.1f}s (the round itself "
            f"{outcome.seconds['round']:.1f}s) -> served by the API "
            f"{served - nth_sent:.1f}s after the event"
        )
        after_share, served_after = trend_share()
        echo(
            f"       {watch}'s top 10 via the API: {before_share} {trend} {target} with "
            f"{served_before} -> {after_share} with {served_after}"
        )

    # 4. Frozen against online, on the events after those streamed.
    histories = store.histories(chosen, dataset.domains)
    post = [
        Sample(
            f"post-{u}",
            u,
            target,
            evs[-1].item_id,
            evs[-1].timestamp,
            tuple((h.domain, h.item_id) for h in histories[u][1])[-50:],
        )
        for u, evs in by_user.items()
    ]
    current = store.current_model()
    frozen = _model_recall(frozen_uri, target, post)
    online = _model_recall(current.uri, target, post) if current else float("nan")
    figures.update(frozen_recall=frozen, online_recall=online)
    echo(
        f"       Recall@20 on each user's next {target} event (not streamed, {len(post)} "
        f"users): frozen {frozen:.3f} -> online {online:.3f}"
    )

    # 5. A corrupted update: the shift's events again, each label remapped to another item (an
    # id-mapping bug; shuffling the labels keeps the trend's popularity, and on a small world's
    # weak model that passed the gate at random). The window is rewound so the drill does not
    # depend on how many samples the first round left over.
    if shift_start is not None:
        learner.buffer.set_cursor(shift_start)
    _wait("the shift's samples", lambda: len(learner.pending()) >= len(streamed), 120)
    drill = learner.run_round(force=True, drill="remap-items")
    if drill is None:
        raise CrossRecError(
            f"demo: the corrupted-update round did not run ({len(learner.pending())} new samples)"
        )
    kept = store.current_model()
    echo(
        f"       a corrupted update (item ids remapped): {drill.summary()}; served version "
        f"stays {kept.version if kept else '-'}"
    )
    if outcome.accepted:
        back = learner.registry.rollback(store)
        started = time.perf_counter()
        _wait(
            "the rollback to be served",
            lambda: api("GET", "/v1/model", None)[1].get("model_version") == back.version,
            120,
        )
        echo(
            f"       crossrec models rollback: {back.version} served again after "
            f"{time.perf_counter() - started:.1f}s"
        )
    return figures
