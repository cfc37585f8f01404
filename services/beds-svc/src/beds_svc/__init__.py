"""Beds service: beds, their status and allocation, shared capacity, strain levels and inter-site
transfers.
"""
