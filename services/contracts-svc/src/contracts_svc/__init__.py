"""Contracts service: contracts of objectives and means (COM / contrats de pôle), service contracts
and cooperation agreements, their objectives, means, reviews and incentive.
"""
