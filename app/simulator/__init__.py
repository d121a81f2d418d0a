"""Deterministic traffic simulator with ground truth (``ivt simulate``).

Humans with daily and weekly rhythms and six bot families (:mod:`.truth` says what each is), from
one seed. :mod:`.history` writes days of it as Parquet files; :mod:`.live` publishes it to Kafka at
a steady rate. The generators (:mod:`.humans`, :mod:`.bots`) work on chunks of simulated time with
numpy; :mod:`.generator` orders their output and derives purchases and RFM updates.
"""
