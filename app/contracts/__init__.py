"""The foundation: settings, event contracts, topics, schemas, validation and errors.

Everything else builds on these modules; they import nothing of ours outside this package
(``.importlinter``), so a producer in another service can read the contracts alone.
"""
