"""closedloop: decoders package."""
