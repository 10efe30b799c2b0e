"""closedloop: acquisition package."""
