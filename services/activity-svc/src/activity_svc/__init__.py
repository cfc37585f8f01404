"""Activity service: the territory referential (org-unit tree), activity records, indicators with
year-over-year comparison, targets and alerts.
"""
