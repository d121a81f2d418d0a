"""The Faust application side of ivt: settings, topics, event contracts, broker and CLI wiring."""
