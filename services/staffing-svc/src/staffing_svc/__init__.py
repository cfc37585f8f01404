"""Staffing service: practitioners working across sites, their authorisations, staffing needs,
assignments and on-call rotas.
"""
