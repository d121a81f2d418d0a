"""Everything that talks to Kafka as a plain client: one client factory, topic administration, and
the local Apache Kafka broker (KRaft) fetched from Maven Central.

``clients`` builds every aiokafka client from :class:`~app.contracts.settings.Settings`; ``jars``
fetches the broker with Maven, ``local`` runs it as a detached process, ``admin`` creates topics from
:mod:`app.contracts.topics`. ``ivt broker`` / ``ivt topics`` live in :mod:`app.cli.broker`.
"""
