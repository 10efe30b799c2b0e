"""closedloop: app package."""
