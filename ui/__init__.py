"""closedloop: ui package."""
