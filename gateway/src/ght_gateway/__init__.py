"""The gateway: the platform's single entry point (identity, routing, rate limits, aggregation,
live feed, portal).
"""
