"""One module per stream stage. Agents orchestrate; the pure logic they call lives in ``app``/``models``."""
