"""The local Apache Kafka 4 broker (KRaft) and the project's topics.

``jars`` fetches the broker with Maven, ``local`` runs it as a detached process, ``admin`` creates
topics from :mod:`app.topics`, ``cli`` is ``ivt broker`` / ``ivt topics``.
"""

from app.broker.admin import TopicReport, ensure_topics, ensure_topics_async, list_topics, list_topics_async
from app.broker.jars import ensure_jars
from app.broker.local import BrokerState, BrokerStatus, LocalBroker

__all__ = [
    "BrokerState",
    "BrokerStatus",
    "LocalBroker",
    "TopicReport",
    "ensure_jars",
    "ensure_topics",
    "ensure_topics_async",
    "list_topics",
    "list_topics_async",
]
