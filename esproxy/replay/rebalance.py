"""The replay's membership of its consumer group: the partition assignors it may use, the rebalance listener
(which tells whether a group join is under way), and a stop that lets a join under way complete first.

kafka-python calls the listener from within ``KafkaConsumer.poll``: ``on_partitions_revoked`` (possibly with
no partitions) when it starts a join, ``on_partitions_assigned`` (possibly with none) once the join is done.
Example: a replay starts and is asked to stop 2 s later, while its first join waits for the other members:
``Rebalances.joined`` is still False, so ``finish_join`` polls (each poll 0.5 s at most) until the
assignment comes, and only then does the consumer leave the group.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
from kafka.errors import KafkaError

log = logging.getLogger("esproxy.replay")

ASSIGNORS = {
    "range": RangePartitionAssignor,
    "roundrobin": RoundRobinPartitionAssignor,
    "rr": RoundRobinPartitionAssignor,
    "sticky": StickyPartitionAssignor,
}

# A stop waits no longer than this for the group coordinator to take our leaving (seconds).
LEAVE_GROUP_TIMEOUT = 3.0

# A stop during a group join gives the join this long to complete before leaving (seconds); see finish_join.
JOIN_FINISH_TIMEOUT = 5.0


def names(partitions: Iterable[TopicPartition]) -> str:
    """``[topic-0, topic-1]``: how logs name partitions."""
    return "[" + ", ".join(f"{tp.topic}-{tp.partition}" for tp in sorted(partitions)) + "]"


class Rebalances(ConsumerRebalanceListener):
    """Logs the rebalances, hands the revoked partitions to ``revoked`` (which ends their lanes), and keeps
    ``joined``: the consumer is a member of its group with its partitions (no join under way)."""

    def __init__(self, group: str, revoked: Callable[[set[TopicPartition]], None]) -> None:
        self.group = group
        self.revoked = revoked
        self.joined = False

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.joined = False
        if revoked:
            log.info("kafka consumer group %s revoked partitions %s", self.group, names(revoked))
            self.revoked(revoked)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("kafka consumer group %s assigned partitions %s", self.group, names(assigned))
        self.joined = True


def finish_join(consumer: KafkaConsumer, rebalances: Rebalances, deadline: float) -> None:
    """A stop while a group join is under way (a restart right after a start or a deploy): let the join
    complete, for up to JOIN_FINISH_TIMEOUT (and LEAVE_GROUP_TIMEOUT before ``deadline``), before the consumer
    leaves the group.

    Leaving between JoinGroup and SyncGroup is valid Kafka, and Apache Kafka rebalances without the member
    at once; but a coordinator may mishandle it: Tansu (0.6, the demo's broker) keeps a leader that left
    mid-join as the group's leader, so that no member ever gets partitions again. Once the join is complete
    the leave is an ordinary one, which every coordinator handles; on Kafka it costs one SyncGroup, the
    rebalance that follows the leave being the same. The records these polls bring are not replayed (the
    lanes are closed) nor committed: the next owner reads them from the last commit."""
    if rebalances.joined:
        return
    group = rebalances.group
    until = min(time.monotonic() + JOIN_FINISH_TIMEOUT, deadline - LEAVE_GROUP_TIMEOUT)
    if until <= time.monotonic():
        return
    log.info(
        "kafka consumer group %s: stopping during the group join; completing it first (up to %.0fs) so that"
        " the group is left in order",
        group,
        until - time.monotonic(),
    )
    while not rebalances.joined:
        left = until - time.monotonic()
        if left <= 0:
            log.warning("kafka consumer group %s: the join did not complete; leaving the group during it", group)
            return
        try:
            consumer.poll(timeout_ms=max(1, int(min(left, 0.5) * 1000)))
        except KafkaError as e:
            log.warning("kafka consumer group %s: completing the join before leaving: %s", group, e)
            return
