"""closedloop: stimulation package."""
