"""The post-trade lifecycle: P outcomes, confirmations, affirmation and the end-of-day sweep."""
